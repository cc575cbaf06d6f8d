//! Topic patterns: what a token's `subscribe` and `publish` claims (and the
//! anonymous rules of a server) list. A pattern is an exact topic name, or a prefix
//! ending in `*` (`chat:*` matches `chat:` and every topic that starts with it; `*`
//! alone matches every topic) — Mercure's topic selectors without URI templates,
//! Centrifugo's namespaces without configuration. Parsed once where it enters (a
//! token, a flag), so a check is a string comparison per pattern.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use crate::pubsub::wire::MAX_TOPIC_LEN;

/// The most patterns one list may hold (a token's `subscribe` or `publish`, a
/// server's anonymous rules): 256. A check walks the list, so its length is bounded;
/// a token with a longer list is refused (`unauthorized`), as is a flag.
pub const MAX_PATTERNS: usize = 256;

/// One topic pattern: an exact name, or a prefix ending in `*`.
///
/// ```
/// use wsevents::pubsub::auth::TopicPattern;
/// let chat: TopicPattern = "chat:*".parse()?;
/// assert!(chat.matches("chat:lobby") && chat.matches("chat:") && !chat.matches("chat"));
/// let news: TopicPattern = "news".parse()?;
/// assert!(news.matches("news") && !news.matches("news:sport"));
/// assert!("*".parse::<TopicPattern>()?.matches("anything"));
/// assert!("a*b".parse::<TopicPattern>().is_err());
/// # Ok::<(), wsevents::pubsub::auth::PatternError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// Exactly this topic.
    Exact(String),
    /// Every topic that starts with this prefix (written with a trailing `*`; an
    /// empty prefix, `*`, is every topic).
    Prefix(String),
}

/// Why a string is not a [`TopicPattern`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The empty string (which would match nothing a client can name).
    #[error("a topic pattern is not empty")]
    Empty,
    /// Longer than a topic may be, `*` included.
    #[error("a topic pattern is at most {} bytes (a topic name, or a prefix and `*`)", MAX_TOPIC_LEN + 1)]
    TooLong,
    /// A `*` other than as the last character.
    #[error("`*` may only end a topic pattern (a prefix): {0:?}")]
    StarInside(String),
    /// A list of more than [`MAX_PATTERNS`].
    #[error("at most {MAX_PATTERNS} topic patterns in a list")]
    TooMany,
}

impl TopicPattern {
    /// Whether `topic` is one this pattern names.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for TopicPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<TopicPattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.len() > MAX_TOPIC_LEN + 1 {
            return Err(PatternError::TooLong);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return Err(PatternError::StarInside(s.to_owned()));
        }
        if !prefix && s.len() > MAX_TOPIC_LEN {
            return Err(PatternError::TooLong);
        }
        Ok(if prefix {
            TopicPattern::Prefix(body.to_owned())
        } else {
            TopicPattern::Exact(body.to_owned())
        })
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicPattern::Exact(name) => f.write_str(name),
            TopicPattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

/// A list of [`TopicPattern`]s (at most [`MAX_PATTERNS`]): a topic is in it when one
/// of them matches. Empty: no topic.
///
/// ```
/// use wsevents::pubsub::auth::TopicPatterns;
/// let may = TopicPatterns::parse(["news", "chat:*"])?;
/// assert!(may.matches("news") && may.matches("chat:1") && !may.matches("admin"));
/// assert!(TopicPatterns::any().matches("admin"));
/// assert!(!TopicPatterns::none().matches("news"));
/// # Ok::<(), wsevents::pubsub::auth::PatternError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicPatterns(Vec<TopicPattern>);

impl TopicPatterns {
    /// No topic at all.
    pub fn none() -> TopicPatterns {
        TopicPatterns(Vec::new())
    }

    /// Every topic (`["*"]`).
    pub fn any() -> TopicPatterns {
        TopicPatterns(vec![TopicPattern::Prefix(String::new())])
    }

    /// Parse each string as a [`TopicPattern`]; the first that is not one is the
    /// error, as is a list longer than [`MAX_PATTERNS`].
    pub fn parse<I, S>(patterns: I) -> Result<TopicPatterns, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Vec::new();
        for pattern in patterns {
            if list.len() == MAX_PATTERNS {
                return Err(PatternError::TooMany);
            }
            list.push(pattern.as_ref().parse()?);
        }
        Ok(TopicPatterns(list))
    }

    /// A list of these patterns ([`PatternError::TooMany`] past [`MAX_PATTERNS`]).
    pub fn new(patterns: Vec<TopicPattern>) -> Result<TopicPatterns, PatternError> {
        if patterns.len() > MAX_PATTERNS {
            return Err(PatternError::TooMany);
        }
        Ok(TopicPatterns(patterns))
    }

    /// Whether one of the patterns matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        self.0.iter().any(|pattern| pattern.matches(topic))
    }

    /// Whether the list is empty (no topic).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The patterns.
    pub fn iter(&self) -> impl Iterator<Item = &TopicPattern> {
        self.0.iter()
    }
}

impl fmt::Display for TopicPatterns {
    /// The patterns, comma-separated (`news, chat:*`); `(none)` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, pattern) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{pattern}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for TopicPatterns {
    /// A JSON list of pattern strings (a token's claims).
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<TopicPatterns, D::Error> {
        let list = Vec::<String>::deserialize(deserializer)?;
        TopicPatterns::parse(list).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_or_say_why_not() {
        assert_eq!("news".parse(), Ok(TopicPattern::Exact("news".into())));
        assert_eq!("chat:*".parse(), Ok(TopicPattern::Prefix("chat:".into())));
        assert_eq!("*".parse(), Ok(TopicPattern::Prefix(String::new())));
        assert_eq!("".parse::<TopicPattern>(), Err(PatternError::Empty));
        assert_eq!(
            "a*b".parse::<TopicPattern>(),
            Err(PatternError::StarInside("a*b".into()))
        );
        assert_eq!(
            "**".parse::<TopicPattern>(),
            Err(PatternError::StarInside("**".into()))
        );
        let longest = "t".repeat(MAX_TOPIC_LEN);
        assert!(longest.parse::<TopicPattern>().is_ok());
        assert!(format!("{longest}*").parse::<TopicPattern>().is_ok());
        assert_eq!(
            format!("{longest}t").parse::<TopicPattern>(),
            Err(PatternError::TooLong)
        );
        assert_eq!(
            format!("{longest}t*").parse::<TopicPattern>(),
            Err(PatternError::TooLong)
        );
    }

    #[test]
    fn an_exact_name_is_not_a_prefix() {
        let news: TopicPattern = "news".parse().unwrap();
        assert!(news.matches("news"));
        assert!(!news.matches("news2") && !news.matches("new") && !news.matches("News"));
        let chat: TopicPattern = "chat:*".parse().unwrap();
        assert!(chat.matches("chat:") && chat.matches("chat:a:b"));
        assert!(!chat.matches("chat") && !chat.matches("xchat:a"));
    }

    #[test]
    fn lists_are_bounded_and_read_from_json() {
        let ok: TopicPatterns = serde_json::from_str(r#"["news","chat:*"]"#).unwrap();
        assert_eq!(ok.to_string(), "news, chat:*");
        assert!(serde_json::from_str::<TopicPatterns>(r#"["a*b"]"#).is_err());
        assert!(serde_json::from_str::<TopicPatterns>(r#""news""#).is_err());
        let many = vec!["t"; MAX_PATTERNS];
        assert!(TopicPatterns::parse(&many).is_ok());
        let too_many = vec!["t"; MAX_PATTERNS + 1];
        assert_eq!(TopicPatterns::parse(&too_many), Err(PatternError::TooMany));
        assert_eq!(TopicPatterns::none().to_string(), "(none)");
    }
}
