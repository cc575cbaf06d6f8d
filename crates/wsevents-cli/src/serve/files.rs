//! `serve --dir PATH`: static files beside the demo page, for a page of one's own that
//! opens sockets on the same port.
//!
//! A request path maps to a file under the directory only if every segment, once
//! percent-decoded, is a plain name: `..`, `.`, an empty segment inside the path, a
//! backslash or a NUL refuse it (404, like a missing file: nothing about the disk is
//! told), and the file found must still be inside the directory once symbolic links are
//! resolved. A directory serves its `index.html`. Files are read whole, up to
//! [`MAX_FILE`]; the content type follows the extension.

use std::io;
use std::path::{Path, PathBuf};

use http::header::{CACHE_CONTROL, HeaderValue};
use http::{Method, Response, StatusCode};

use super::http::{Body, plain};

/// The largest file served (a demo's assets, not a download server).
const MAX_FILE: u64 = 64 << 20;

/// The served directory, resolved once at start.
#[derive(Debug, Clone)]
pub(super) struct Dir {
    root: PathBuf,
}

impl Dir {
    /// `path`, which must be a directory.
    pub(super) fn new(path: &Path) -> crate::Result<Dir> {
        let root = path
            .canonicalize()
            .map_err(|e| format!("--dir {}: {e}", path.display()))?;
        if !root.is_dir() {
            return Err(format!("--dir {}: not a directory", path.display()).into());
        }
        Ok(Dir { root })
    }

    /// The file for a request path, if there is one and it may be served.
    fn resolve(&self, request_path: &str) -> Option<PathBuf> {
        let decoded = percent_decode(request_path)?;
        let relative = decoded.strip_prefix('/')?;
        let mut path = self.root.clone();
        let segments: Vec<&str> = relative.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match *segment {
                // A trailing slash: the directory itself.
                "" if last => {}
                "" | "." | ".." => return None,
                s if s.contains(['\\', '\0']) => return None,
                s => path.push(s),
            }
        }
        let mut path = path.canonicalize().ok()?;
        if path.is_dir() {
            path = path.join("index.html").canonicalize().ok()?;
        }
        (path.starts_with(&self.root) && path.is_file()).then_some(path)
    }

    /// The answer to a GET or HEAD of the file `request_path` names; `None` when there
    /// is none, for the caller's 404.
    pub(super) async fn respond(
        &self,
        method: &Method,
        request_path: &str,
    ) -> Option<Response<Body>> {
        if method != Method::GET && method != Method::HEAD {
            return None;
        }
        let path = self.resolve(request_path)?;
        let read = tokio::task::spawn_blocking(move || {
            let len = std::fs::metadata(&path)?.len();
            if len > MAX_FILE {
                return Err(io::Error::other("file over 64 MiB"));
            }
            std::fs::read(&path).map(|body| (body, content_type(&path)))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|read| read);
        let (body, content_type) = match read {
            Ok(read) => read,
            Err(error) => {
                tracing::info!(path = %request_path, %error, "file not served");
                return None;
            }
        };
        let mut response = plain(StatusCode::OK, content_type, body);
        let headers = response.headers_mut();
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
        Some(response)
    }
}

/// `%XX` decoded; `None` for a bad escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `Content-Type` for a file, by its extension.
fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" | "map" => "application/json",
        "txt" | "md" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "pdf" => "application/pdf",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "wav" => "audio/wav",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_stay_inside_the_directory() {
        let root = std::env::temp_dir().join(format!("wsevents-dir-{}", std::process::id()));
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.js"), "x").unwrap();
        std::fs::write(root.join("sub/index.html"), "x").unwrap();
        let dir = Dir::new(&root).unwrap();
        let root = &dir.root;
        assert_eq!(dir.resolve("/a.js"), Some(root.join("a.js")));
        assert_eq!(dir.resolve("/sub/"), Some(root.join("sub/index.html")));
        assert_eq!(dir.resolve("/sub"), Some(root.join("sub/index.html")));
        assert_eq!(dir.resolve("/%61.js"), Some(root.join("a.js")));
        for bad in [
            "/../etc/passwd",
            "/sub/../a.js",
            "/%2e%2e/etc/passwd",
            "/%2E%2E%2Fetc%2Fpasswd",
            "/sub//a.js",
            "/./a.js",
            "/..%5c..%5cetc",
            "/a.js%00",
            "/%zz",
            "/missing",
            "a.js",
        ] {
            assert_eq!(dir.resolve(bad), None, "{bad}");
        }
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(
            content_type(Path::new("x/app.JS")),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type(Path::new("logo.svg")), "image/svg+xml");
        assert_eq!(content_type(Path::new("blob")), "application/octet-stream");
    }
}
