//! Routes: which paths a server serves, with parameters in them (`/topic/{name}`), and
//! what a matched route leaves on the connection.
//!
//! A pattern is parsed once, when the route is added; a request's path is matched
//! against the patterns in the order they were added, once, during the handshake. The
//! match (the pattern and the parameters, percent-decoded) then stays on the
//! connection, so a handler reads `ws.param("name")` without parsing the request
//! again. The syntax is axum's (0.8): `{name}` is one whole segment, `{*name}` the rest
//! of the path (at the end only); everything else matches itself.

use std::fmt;
use std::sync::Arc;

/// One segment of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// Matches itself.
    Literal(Box<str>),
    /// `{name}`: one non-empty segment.
    Param(Arc<str>),
    /// `{*name}`: the rest of the path, at least one character.
    Rest(Arc<str>),
}

/// A route's path pattern, parsed.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RoutePattern {
    source: Arc<str>,
    /// `None` for a pattern without parameters, matched by comparing the whole path.
    segments: Option<Box<[Segment]>>,
}

impl fmt::Debug for RoutePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.source, f)
    }
}

/// What matching a path against a pattern gave.
pub(crate) enum Matched {
    /// The pattern matches, with these parameters.
    Yes(RouteMatch),
    /// The pattern does not match.
    No,
    /// The pattern matches, but a parameter is not UTF-8 once percent-decoded.
    BadParam(Arc<str>),
}

impl RoutePattern {
    /// Parse `source`.
    ///
    /// # Panics
    ///
    /// On a pattern that is not one (a programming error, found when the route is
    /// added, as axum does): not starting with `/`, a `{` or `}` that is not a whole
    /// segment's, an empty or repeated parameter name, `{*rest}` before the end.
    pub(crate) fn parse(source: &str) -> RoutePattern {
        match Self::try_parse(source) {
            Ok(pattern) => pattern,
            Err(why) => panic!("invalid route {source:?}: {why}"),
        }
    }

    fn try_parse(source: &str) -> Result<RoutePattern, &'static str> {
        if !source.starts_with('/') {
            return Err("a route starts with /");
        }
        if !source.contains(['{', '}']) {
            return Ok(RoutePattern {
                source: source.into(),
                segments: None,
            });
        }
        let parts: Vec<&str> = source[1..].split('/').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (rest, name) = match inner.strip_prefix('*') {
                        Some(name) => (true, name),
                        None => (false, inner),
                    };
                    if name.is_empty() || name.contains(['{', '}', '*']) {
                        return Err("a parameter needs a name, without braces or *");
                    }
                    if names.contains(&name) {
                        return Err("a parameter name is used twice");
                    }
                    names.push(name);
                    if rest && i + 1 != parts.len() {
                        return Err("{*name} comes last");
                    }
                    if rest {
                        Segment::Rest(name.into())
                    } else {
                        Segment::Param(name.into())
                    }
                }
                None if part.contains(['{', '}']) => {
                    return Err("a parameter is a whole segment: /{name}/");
                }
                None => Segment::Literal((*part).into()),
            };
            segments.push(segment);
        }
        Ok(RoutePattern {
            source: source.into(),
            segments: Some(segments.into()),
        })
    }

    /// The pattern as written.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Match `path` (as sent: percent-encoded, without the query).
    pub(crate) fn matches(&self, path: &str) -> Matched {
        let Some(segments) = &self.segments else {
            return if *self.source == *path {
                Matched::Yes(RouteMatch {
                    route: self.source.clone(),
                    params: Vec::new(),
                })
            } else {
                Matched::No
            };
        };
        let Some(mut rest) = path.strip_prefix('/') else {
            return Matched::No;
        };
        let mut params = Vec::new();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let part = match segment {
                Segment::Rest(_) => std::mem::take(&mut rest),
                _ => match rest.split_once('/') {
                    Some((part, after)) if !last => {
                        rest = after;
                        part
                    }
                    Some(_) => return Matched::No,
                    None if last => std::mem::take(&mut rest),
                    None => return Matched::No,
                },
            };
            match segment {
                Segment::Literal(literal) if **literal == *part => {}
                Segment::Literal(_) => return Matched::No,
                Segment::Param(name) | Segment::Rest(name) => {
                    if part.is_empty() {
                        return Matched::No;
                    }
                    match percent_encoding::percent_decode_str(part).decode_utf8() {
                        Ok(value) => params.push((name.clone(), value.into_owned())),
                        Err(_) => return Matched::BadParam(name.clone()),
                    }
                }
            }
        }
        Matched::Yes(RouteMatch {
            route: self.source.clone(),
            params,
        })
    }
}

/// The route a connection was accepted on: its pattern and the values of its
/// parameters, percent-decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteMatch {
    route: Arc<str>,
    params: Vec<(Arc<str>, String)>,
}

impl RouteMatch {
    /// The pattern, as written (`/topic/{name}`).
    pub(crate) fn route(&self) -> &str {
        &self.route
    }

    /// The value of the parameter `name`.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| **n == *name)
            .map(|(_, value)| value.as_str())
    }

    /// Every parameter, in the pattern's order.
    pub(crate) fn params(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(n, v)| (&**n, v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
        match RoutePattern::parse(pattern).matches(path) {
            Matched::Yes(m) => Some(
                m.params()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
            ),
            Matched::No => None,
            Matched::BadParam(name) => panic!("bad parameter {name}"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            list.iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn a_plain_route_matches_the_whole_path_only() {
        assert_eq!(params("/chat", "/chat"), pairs(&[]));
        assert_eq!(params("/chat", "/chat/"), None);
        assert_eq!(params("/chat", "/chatroom"), None);
        assert_eq!(params("/", "/"), pairs(&[]));
    }

    #[test]
    fn parameters_take_one_segment_each_decoded() {
        assert_eq!(
            params("/topic/{name}", "/topic/news"),
            pairs(&[("name", "news")])
        );
        assert_eq!(
            params("/topic/{name}", "/topic/caf%C3%A9%20au%20lait"),
            pairs(&[("name", "café au lait")])
        );
        assert_eq!(params("/topic/{name}", "/topic/"), None, "empty");
        assert_eq!(params("/topic/{name}", "/topic"), None);
        assert_eq!(params("/topic/{name}", "/topic/a/b"), None);
        assert_eq!(params("/topic/{name}", "/other/a"), None);
        assert_eq!(
            params("/room/{room}/user/{user}", "/room/7/user/ann"),
            pairs(&[("room", "7"), ("user", "ann")])
        );
        assert_eq!(
            params("/room/{room}/user/{user}", "/room/7/users/ann"),
            None
        );
    }

    #[test]
    fn a_rest_parameter_takes_the_rest() {
        assert_eq!(
            params("/files/{*path}", "/files/a/b%2Fc"),
            pairs(&[("path", "a/b/c")])
        );
        assert_eq!(params("/files/{*path}", "/files/"), None);
        assert_eq!(params("/files/{*path}", "/files"), None);
    }

    #[test]
    fn a_parameter_that_is_not_utf8_is_told_apart() {
        let pattern = RoutePattern::parse("/topic/{name}");
        assert!(matches!(pattern.matches("/topic/%FF"), Matched::BadParam(n) if &*n == "name"));
    }

    #[test]
    fn a_match_remembers_its_route() {
        let Matched::Yes(m) = RoutePattern::parse("/topic/{name}").matches("/topic/x") else {
            panic!("no match");
        };
        assert_eq!(m.route(), "/topic/{name}");
        assert_eq!(m.param("name"), Some("x"));
        assert_eq!(m.param("other"), None);
    }

    #[test]
    fn invalid_patterns_are_refused() {
        for bad in [
            "chat",
            "/a{b}",
            "/{}",
            "/{a}/{a}",
            "/{*rest}/more",
            "/{a",
            "/{*}",
        ] {
            assert!(RoutePattern::try_parse(bad).is_err(), "{bad}");
        }
        assert!(RoutePattern::try_parse("/a/{b}/{*c}").is_ok());
    }
}
