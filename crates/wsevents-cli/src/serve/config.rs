//! `wsevents serve --config FILE`: every setting of `serve` in one TOML file
//! (docs/wsevents.example.toml), with the command line over it.
//!
//! **One source of truth: the flags.** A key is a flag's long name without `--`
//! (`max-connections = 5000`, `tls-cert = "cert.pem"`), so every flag has a key the
//! moment it exists, and nothing has to be kept in step by hand. The file is turned
//! into flags (`--max-connections=5000`) put *before* the command line's, and clap
//! parses the lot: the same parsers, defaults, ranges and conflicts as on the command
//! line. A flag given on the command line drops the file's key for it (so flags
//! override the file, repeatable ones included).
//!
//! Values: a switch (`--echo`) takes `true` or `false`; a repeatable flag (`--protocol`)
//! an array (`protocol = ["chat", "superchat"]`) or one value; any other a string, an
//! integer or a float (`history-ttl = 300`, `listen = "0.0.0.0:8080"`). Paths are
//! relative to the working directory, as on the command line.
//!
//! Refusals, each with the file's line and column and exit code 2 (a bad command line):
//! a file that is not TOML, an unknown key (with the keys there are), a value of the
//! wrong kind, and a value the flag's parser refuses. Never a panic: the file is input.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::ops::Range;
use std::path::Path;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args as _, Command, FromArgMatches};
use toml::{Spanned, Value};

use super::Args;

/// Why a config file was refused: what to print, in full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct ConfigError(String);

/// Why `serve --config` could not start.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// The file (read, TOML, a key, a value).
    File(ConfigError),
    /// The command line itself (or `--help`): clap's, printed as clap's are.
    CommandLine(clap::Error),
}

/// The flags `serve` takes, as clap knows them.
pub(crate) fn command() -> Command {
    Args::augment_args(Command::new("serve").no_binary_name(true))
}

/// Whether the arguments after `serve` name a config file.
pub(crate) fn wanted(cli: &[OsString]) -> bool {
    cli.iter()
        .filter_map(|a| a.to_str())
        .any(|a| a == "--config" || a.starts_with("--config="))
}

/// `serve`'s options from the arguments after `serve` (`cli`) and the file their
/// `--config` names, the command line over the file.
pub(crate) fn from_command_line(cli: &[OsString]) -> Result<Args, LoadError> {
    // Leniently first: what the command line alone lacks (--redis-max-pending-bytes
    // needs --redis, which may be in the file) is checked once both are together.
    let lenient = command()
        .ignore_errors(true)
        .try_get_matches_from(cli.to_vec())
        .map_err(LoadError::CommandLine)?;
    let Some(path) = lenient.get_one::<std::path::PathBuf>("config").cloned() else {
        let strict = command()
            .try_get_matches_from(cli.to_vec())
            .map_err(LoadError::CommandLine)?;
        return Args::from_arg_matches(&strict).map_err(LoadError::CommandLine);
    };
    load(&path, cli, &lenient)
}

/// `serve`'s options: those of the file at `path` under those of the command line
/// (`cli`: the arguments after `serve`; `matches`: how clap parsed them).
fn load(path: &Path, cli: &[OsString], matches: &ArgMatches) -> Result<Args, LoadError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadError::File(ConfigError(format!("--config {name}: {e}"))))?;
    let from_file = flags(&name, &text, |id| {
        matches.value_source(id) == Some(ValueSource::CommandLine)
    })
    .map_err(LoadError::File)?;
    let mut argv: Vec<OsString> = from_file.iter().map(|f| f.flag.clone().into()).collect();
    argv.extend(cli.iter().cloned());
    let parsed = command().try_get_matches_from(argv).map_err(|error| {
        // A value of the file's that clap refused: say where it is.
        let arg = error
            .get(clap::error::ContextKind::InvalidArg)
            .map(ToString::to_string)
            .unwrap_or_default();
        let first = error
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_owned();
        let from = |f: &&FromFile| {
            arg == format!("--{}", f.key) || arg.starts_with(&format!("--{} ", f.key))
        };
        match from_file.iter().find(from) {
            Some(f) => LoadError::File(ConfigError(format!("{name}:{}: {}: {first}", f.at, f.key))),
            None => LoadError::CommandLine(error),
        }
    })?;
    Args::from_arg_matches(&parsed).map_err(LoadError::CommandLine)
}

/// One flag made from a key of the file.
struct FromFile {
    key: String,
    /// `LINE:COLUMN` of its value.
    at: String,
    flag: String,
}

/// The flags the file's keys stand for, but those `on_cli` says the command line
/// gives (by arg id).
fn flags(
    name: &str,
    text: &str,
    on_cli: impl Fn(&str) -> bool,
) -> Result<Vec<FromFile>, ConfigError> {
    let table: BTreeMap<Spanned<String>, Spanned<Value>> = toml::from_str(text).map_err(|e| {
        let at = e
            .span()
            .map_or_else(|| "1:1".to_owned(), |s| line_col(text, &s));
        ConfigError(format!("{name}:{at}: not TOML: {}", e.message().trim()))
    })?;
    let command = command();
    let by_long: HashMap<&str, &clap::Arg> = command
        .get_arguments()
        .filter(|a| a.get_id() != "config")
        .filter_map(|a| Some((a.get_long()?, a)))
        .collect();
    let mut out = Vec::new();
    for (key, value) in &table {
        let at = line_col(text, &value.span());
        let Some(arg) = by_long.get(key.get_ref().as_str()) else {
            let mut keys: Vec<&str> = by_long.keys().copied().collect();
            keys.sort_unstable();
            return Err(ConfigError(format!(
                "{name}:{}: unknown key `{}` (the keys are serve's flags without --: {})",
                line_col(text, &key.span()),
                key.get_ref(),
                keys.join(", ")
            )));
        };
        if on_cli(arg.get_id().as_str()) {
            continue;
        }
        let key = key.get_ref().clone();
        let wrong = |what: &str| {
            ConfigError(format!(
                "{name}:{at}: {key}: {what}, not {}",
                kind(value.get_ref())
            ))
        };
        let values: Vec<String> = match (arg.get_action(), value.get_ref()) {
            (ArgAction::SetTrue, Value::Boolean(true)) => {
                out.push(FromFile {
                    flag: format!("--{key}"),
                    key,
                    at,
                });
                continue;
            }
            (ArgAction::SetTrue, Value::Boolean(false)) => continue,
            (ArgAction::SetTrue, _) => return Err(wrong("true or false")),
            (ArgAction::Append, Value::Array(items)) => items
                .iter()
                .map(|item| scalar(item).ok_or_else(|| wrong("an array of strings or numbers")))
                .collect::<Result<_, _>>()?,
            (_, one) => vec![scalar(one).ok_or_else(|| wrong("a string or a number"))?],
        };
        for value in values {
            out.push(FromFile {
                flag: format!("--{key}={value}"),
                key: key.clone(),
                at: at.clone(),
            });
        }
    }
    Ok(out)
}

/// A string, an integer or a float, as the command line would have it.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Integer(n) => Some(n.to_string()),
        Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "an array",
        Value::Table(_) => "a table",
    }
}

/// `LINE:COLUMN` (1-based, columns in characters) of the start of `span` in `text`.
fn line_col(text: &str, span: &Range<usize>) -> String {
    let mut end = span.start.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{column}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The example file the docs show.
    const EXAMPLE: &str = include_str!("../../../../docs/wsevents.example.toml");

    fn parse(text: &str) -> Result<Args, ConfigError> {
        let matches = command()
            .try_get_matches_from(Vec::<OsString>::new())
            .unwrap();
        let path = std::env::temp_dir().join(format!(
            "wsevents-config-test-{}-{}.toml",
            std::process::id(),
            text.len()
        ));
        std::fs::write(&path, text).unwrap();
        let loaded = load(&path, &[], &matches);
        let _ = std::fs::remove_file(&path);
        loaded.map_err(|e| match e {
            LoadError::File(ConfigError(m)) => {
                ConfigError(m.replace(&path.display().to_string(), "F"))
            }
            LoadError::CommandLine(e) => ConfigError(format!("command line: {e}")),
        })
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().0
    }

    #[test]
    fn every_flag_has_a_key_in_the_example_file() {
        // Each flag is in the example file, set or commented out (`# key = …`), so a
        // flag added without a word in the example fails here.
        let command = command();
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if ["config", "help"].contains(&long) {
                continue;
            }
            let listed = EXAMPLE.lines().any(|line| {
                let line = line.trim_start_matches('#').trim_start();
                line.strip_prefix(long)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            });
            assert!(listed, "--{long} has no key in docs/wsevents.example.toml");
        }
    }

    #[test]
    fn the_example_file_loads_and_so_does_each_commented_key() {
        parse(EXAMPLE).unwrap();
        // Uncomment the keys one at a time: each is valid as written (the ones
        // that need another, as tls-cert needs tls-key, are tried with it).
        for line in EXAMPLE.lines() {
            let Some(setting) = line.strip_prefix("# ").filter(|l| l.contains(" = ")) else {
                continue;
            };
            let key = setting.split(" = ").next().unwrap();
            let with = match key {
                "tls-cert" => "tls-key = \"key.pem\"\n",
                "tls-key" => "tls-cert = \"cert.pem\"\n",
                "client-ca" => "tls-cert = \"cert.pem\"\ntls-key = \"key.pem\"\n",
                k if k.starts_with("redis-max") => "redis = \"redis://127.0.0.1:6379\"\n",
                "jwt-audience" | "jwt-issuer" => "jwt-secret-file = \"jwt.secret\"\n",
                _ => "",
            };
            let text = format!("{with}{setting}\n");
            // The file's own settings are not repeated: each key alone.
            if let Err(ConfigError(e)) = parse(&text) {
                panic!("{setting:?}: {e}");
            }
        }
    }

    #[test]
    fn keys_become_flags_and_values_are_checked_by_the_flags_parsers() {
        let args = parse(
            "listen = \"127.0.0.1:9000\"\nmax-connections = 7\nprotocol = [\"a\", \"b\"]\n\
             echo = true\nhistory-ttl = 1.5\nno-deflate = false\n",
        )
        .unwrap();
        assert_eq!(args.listen, "127.0.0.1:9000");
        assert_eq!(args.max_connections, 7);
        assert_eq!(args.protocols, ["a", "b"]);
        assert!(args.echo && !args.no_deflate);
        assert_eq!(args.history_ttl, std::time::Duration::from_millis(1500));
        // One value for a repeatable flag.
        assert_eq!(parse("protocol = \"a\"\n").unwrap().protocols, ["a"]);
    }

    #[test]
    fn a_bad_file_says_where() {
        assert_eq!(
            err("listen = \"x\"\nmax-conections = 5\n"),
            format!(
                "F:2:1: unknown key `max-conections` (the keys are serve's flags without --: {})",
                {
                    let mut keys: Vec<String> = command()
                        .get_arguments()
                        .filter_map(|a| a.get_long().map(str::to_owned))
                        .filter(|l| l != "config")
                        .collect();
                    keys.sort();
                    keys.join(", ")
                }
            )
        );
        assert!(
            err("listen = \n").starts_with("F:1:10: not TOML:"),
            "{}",
            err("listen = \n")
        );
        assert_eq!(
            err("\necho = \"yes\"\n"),
            "F:2:8: echo: true or false, not a string"
        );
        assert_eq!(
            err("protocol = [1, {a = 1}]\n"),
            "F:1:12: protocol: an array of strings or numbers, not an array"
        );
        assert_eq!(
            err("listen = true\n"),
            "F:1:10: listen: a string or a number, not a boolean"
        );
        assert!(
            err("[serve]\n").starts_with("F:1:2: unknown key `serve`"),
            "{}",
            err("[serve]\n")
        );
        let refused = err("max-connections = 0\n");
        assert!(
            refused.starts_with(
                "F:1:19: max-connections: invalid value '0' for '--max-connections <N>'"
            ),
            "{refused}"
        );
        let refused = err("history-ttl = -1\n");
        assert!(
            refused.starts_with("F:1:15: history-ttl: invalid value"),
            "{refused}"
        );
        // A missing file.
        let matches = command()
            .try_get_matches_from(Vec::<OsString>::new())
            .unwrap();
        let Err(LoadError::File(missing)) =
            load(Path::new("/nonexistent/wsevents.toml"), &[], &matches)
        else {
            panic!("a missing file loaded");
        };
        assert!(
            missing
                .0
                .starts_with("--config /nonexistent/wsevents.toml: "),
            "{missing}"
        );
    }

    #[test]
    fn the_command_line_overrides_the_file() {
        let cli: Vec<OsString> = ["--max-connections", "9", "--protocol", "c"]
            .iter()
            .map(Into::into)
            .collect();
        let path = std::env::temp_dir().join(format!(
            "wsevents-config-override-{}.toml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            "max-connections = 5\nprotocol = [\"a\", \"b\"]\nmax-handshakes = 3\n",
        )
        .unwrap();
        let mut with: Vec<OsString> = vec!["--config".into(), path.clone().into()];
        with.extend(cli);
        assert!(wanted(&with));
        let Ok(args) = from_command_line(&with) else {
            panic!("not loaded");
        };
        let _ = std::fs::remove_file(&path);
        assert_eq!(args.max_connections, 9);
        assert_eq!(args.protocols, ["c"]);
        assert_eq!(args.max_handshakes, 3);
    }

    #[test]
    fn line_and_column_count_characters() {
        assert_eq!(line_col("ab\ncdé\nx", &(8..9)), "3:1");
        assert_eq!(line_col("ab\ncdéf", &(7..8)), "2:4");
        // Inside a character: where it starts.
        assert_eq!(line_col("ab\ncdé", &(6..7)), "2:3");
        assert_eq!(line_col("", &(5..6)), "1:1");
    }
}
