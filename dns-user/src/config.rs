//! `edgedns serve`'s settings: flags, `EDGEDNS_*` environment variables and a TOML file.
//!
//! The file's keys are the long flags' names (`dns-listen = "127.0.0.1:53"`), and each key is
//! checked by the flag's own parser, so the file takes exactly what the command line takes and
//! cannot drift from it: a flag added to [`ServeArgs`] (or to [`daemon::Config`]) is a key, an
//! environment variable and a line of [`example`] with nothing more to write. A value comes
//! from, in order of precedence: the command line, the environment, the file, the default.

use std::{
    ffi::OsString,
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use clap::{parser::ValueSource, ArgAction, ArgMatches, Command, FromArgMatches as _};
use toml::de::{DeTable, DeValue};

use crate::daemon;

/// The file `serve` reads when no `--config` is given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/edgedns/edgedns.toml";

/// Settings a SIGHUP re-reads and applies; any other change needs a restart.
pub const RELOADABLE: [&str; 7] = [
    "api-token-file",
    "log-level",
    "tsig-keys",
    "allow-axfr",
    "transfer-allow",
    "update-allow",
    "zone-file",
];

/// Everything `edgedns serve` takes.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// TOML file with serve's settings, keyed by the long flags' names
    /// (`api-listen = "127.0.0.1:8053"`); flags and EDGEDNS_* environment variables override
    /// it. Without it, /etc/edgedns/edgedns.toml is read if it exists.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// DNS address and port (UDP and TCP); may be given more than once (or as a comma-separated
    /// list), IPv4 and IPv6, addresses or wildcards (0.0.0.0, [::]). The fast path answers UDP to
    /// exactly these addresses and ports; a wildcard's answers leave from the address asked.
    #[arg(long, default_value = "127.0.0.1:5300", value_delimiter = ',')]
    pub dns_listen: Vec<SocketAddr>,
    /// UDP sockets (SO_REUSEPORT), each with a thread of its own, per --dns-listen address
    /// (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub udp_workers: Option<u16>,
    /// Update API address.
    #[arg(long, default_value = "127.0.0.1:8053")]
    pub api_listen: SocketAddr,
    /// Serve external-dns's webhook provider protocol on this address (off by default). It
    /// takes changes without authentication (external-dns sends none): keep it on localhost,
    /// next to external-dns.
    #[arg(long, value_name = "ADDR")]
    pub webhook_listen: Option<SocketAddr>,
    /// Log line format: text for people, json (one object per line) for log collectors.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// What to log: a level (error, warn, info, debug, trace) or tracing filter directives
    /// (`info,dns_user::api=debug`). RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,
    #[command(flatten)]
    pub daemon: daemon::Config,
}

/// `--log-level`: checked here, so that `config check` and a reload catch a bad one.
fn parse_log_level(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::builder()
        .parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: unknown key `{key}` (the keys are serve's long flags: see `edgedns config example`)", path.display())]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
    },
    #[error("{}:{line}: `{key}`: {message}", path.display())]
    Value {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error("{message}")]
    Args { message: String },
}

/// The name of the environment variable that sets flag `--long`.
pub fn env_name(long: &str) -> String {
    format!("EDGEDNS_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// `cmd` with every long flag that has no variable of its own also read from `EDGEDNS_<FLAG>`.
/// A switch (`--keep-xdp`) takes what environment files write for yes and no: 1/0, true/false,
/// yes/no, on/off.
pub fn with_env(cmd: Command) -> Command {
    cmd.mut_args(|a| match a.get_long() {
        Some(long) if a.get_env().is_none() => {
            // clap keeps `&'static str` names; this runs once per flag per process.
            let name: &'static str = Box::leak(env_name(long).into_boxed_str());
            let a = a.env(name);
            if matches!(a.get_action(), ArgAction::SetTrue) {
                a.value_parser(clap::builder::BoolishValueParser::new())
            } else {
                a
            }
        }
        _ => a,
    })
}

/// `cmd` reading no environment variable: a file is checked on its own.
fn without_env(cmd: &Command) -> Command {
    cmd.clone().mut_args(|a| a.env(None))
}

/// One setting of the file: the flag it stands for and the words it adds to a command line.
#[derive(Debug)]
struct Entry {
    id: String,
    args: Vec<OsString>,
}

/// A checked configuration file.
#[derive(Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    entries: Vec<Entry>,
}

impl ConfigFile {
    /// Reads and checks `path` against `serve`'s flags.
    pub fn load(path: &Path, serve: &Command) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text, serve)
    }

    /// Checks `text` (the file `path`) against `serve`'s flags: every key a long flag, every
    /// value one its parser takes.
    pub fn parse(path: &Path, text: &str, serve: &Command) -> Result<Self, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            line: line_of(e.span().map_or(0, |s| s.start)),
            message: e.message().to_owned(),
        })?;
        let check = without_env(serve);
        let mut entries = Vec::new();
        let mut keys: Vec<_> = table.get_ref().iter().collect();
        keys.sort_by_key(|(k, _)| k.span().start);
        for (key, value) in keys {
            let line = line_of(key.span().start);
            let name: &str = key.get_ref();
            let bad = |message: String| ConfigError::Value {
                path: path.to_owned(),
                line,
                key: name.to_owned(),
                message,
            };
            let arg = serve
                .get_arguments()
                .find(|a| a.get_long() == Some(name) && name != "config")
                .ok_or_else(|| ConfigError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    key: name.to_owned(),
                })?;
            let flag = format!("--{name}");
            let mut args = Vec::new();
            match (arg.get_action(), value.get_ref()) {
                (ArgAction::SetTrue, DeValue::Boolean(b)) => {
                    if *b {
                        args.push(OsString::from(&flag));
                    }
                }
                (ArgAction::SetTrue, _) => return Err(bad("takes true or false".into())),
                (ArgAction::Append, DeValue::Array(items)) => {
                    for item in items {
                        args.push(OsString::from(&flag));
                        args.push(scalar(item.get_ref()).map_err(bad)?.into());
                    }
                }
                (_, DeValue::Array(_)) => return Err(bad("takes one value, not a list".into())),
                (_, v) => {
                    args.push(OsString::from(&flag));
                    args.push(scalar(v).map_err(bad)?.into());
                }
            }
            // The flag's own parser judges the value, so the file and the command line agree.
            let argv = std::iter::once(OsString::from("serve")).chain(args.iter().cloned());
            if let Err(e) = check.clone().try_get_matches_from(argv) {
                return Err(bad(clap_message(&e)));
            }
            entries.push(Entry {
                id: arg.get_id().to_string(),
                args,
            });
        }
        Ok(Self {
            path: path.to_owned(),
            entries,
        })
    }

    /// The words to add to a `serve` command line for the settings that neither it nor the
    /// environment gave (`given` is what they gave).
    fn args(&self, given: &ArgMatches) -> Vec<OsString> {
        self.entries
            .iter()
            .filter(|e| {
                !matches!(
                    given.value_source(&e.id),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                )
            })
            .flat_map(|e| e.args.iter().cloned())
            .collect()
    }
}

/// A TOML scalar as a command-line word.
fn scalar(v: &DeValue<'_>) -> Result<String, String> {
    match v {
        DeValue::String(s) => Ok(s.to_string()),
        DeValue::Integer(i) => {
            let digits = i.as_str().replace('_', "");
            let digits = digits
                .strip_prefix("0x")
                .or_else(|| digits.strip_prefix("0o"))
                .or_else(|| digits.strip_prefix("0b"))
                .unwrap_or(&digits);
            i128::from_str_radix(digits, i.radix())
                .map(|n| n.to_string())
                .map_err(|e| e.to_string())
        }
        DeValue::Float(f) => Ok(f.as_str().to_owned()),
        DeValue::Boolean(b) => Ok(b.to_string()),
        DeValue::Datetime(_) => Err("a date is no value of any setting".into()),
        DeValue::Array(_) => Err("a list inside a list".into()),
        DeValue::Table(_) => Err("a table is no value of any setting".into()),
    }
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// `serve`'s settings as they apply, and where they came from.
#[derive(Debug)]
pub struct Settings {
    pub args: ServeArgs,
    /// The file read, if any.
    pub file: Option<PathBuf>,
    matches: ArgMatches,
}

/// Parses `argv` (`serve` and its flags) with `serve` (which reads the environment, see
/// [`with_env`]), then adds the configuration file's settings.
pub fn settings(serve: &Command, argv: &[OsString]) -> Result<Settings, ConfigError> {
    let parse = |argv: Vec<OsString>| {
        serve
            .clone()
            .try_get_matches_from(argv)
            .map_err(|e| ConfigError::Args {
                message: clap_message(&e),
            })
    };
    let given = parse(argv.to_vec())?;
    let file = match given.get_one::<PathBuf>("config") {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_PATH)).filter(|p| p.exists()),
    };
    let matches = match &file {
        None => given,
        Some(path) => {
            let extra = ConfigFile::load(path, serve)?.args(&given);
            parse(argv.iter().cloned().chain(extra).collect())?
        }
    };
    let args = ServeArgs::from_arg_matches(&matches).map_err(|e| ConfigError::Args {
        message: clap_message(&e),
    })?;
    Ok(Settings {
        args,
        file,
        matches,
    })
}

impl Settings {
    /// The long names of the settings that differ in `new` but only take effect at a restart.
    pub fn restart_only_changes(&self, serve: &Command, new: &Settings) -> Vec<String> {
        let raw = |m: &ArgMatches, id: &str| -> Vec<OsString> {
            m.try_get_raw(id)
                .ok()
                .flatten()
                .map(|v| v.map(|s| s.to_owned()).collect())
                .unwrap_or_default()
        };
        serve
            .get_arguments()
            .filter_map(|a| Some((a.get_id().as_str(), a.get_long()?)))
            .filter(|(_, long)| *long != "config" && !RELOADABLE.contains(long))
            .filter(|(id, _)| raw(&self.matches, id) != raw(&new.matches, id))
            .map(|(_, long)| long.to_owned())
            .collect()
    }
}

/// Checks the file at `path` as `serve --config FILE` would read it, the environment left
/// out: the settings it makes, or why not.
pub fn check(serve: &Command, path: &Path) -> Result<ServeArgs, ConfigError> {
    let serve = without_env(serve);
    let argv: Vec<OsString> = vec!["serve".into(), "--config".into(), path.into()];
    settings(&serve, &argv).map(|s| s.args)
}

/// A configuration file with every key, its help and its default, generated from `serve`'s
/// flags. Keys with a default are set to it (so the file checks every value's syntax); the
/// others are commented out.
pub fn example(serve: &Command) -> String {
    let mut out = format!(
        "# edgedns serve configuration (TOML). Keys are serve's long flags; a flag or an\n\
         # EDGEDNS_* environment variable given at start overrides the key. A SIGHUP re-reads\n\
         # {}; other keys take effect at a restart.\n",
        RELOADABLE.join(", ")
    );
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if long == "config" || matches!(arg.get_action(), ArgAction::Help | ArgAction::Version) {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or_else(|| arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        // clap drops a one-line help's final full stop; the file reads as prose.
        let help = match help.trim_end() {
            h if h.ends_with(['.', ')', ':']) => h.to_owned(),
            h => format!("{h}."),
        };
        for line in wrap(&help, 94) {
            let _ = writeln!(out, "# {line}");
        }
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_owned())
            .collect();
        if !values.is_empty() && !matches!(arg.get_action(), ArgAction::SetTrue) {
            let _ = writeln!(out, "# One of: {}.", values.join(", "));
        }
        let _ = writeln!(out, "# Environment: {}.", env_name(long));
        let defaults = arg.get_default_values();
        match arg.get_action() {
            ArgAction::SetTrue => {
                let _ = writeln!(out, "{long} = false");
            }
            // One default as a plain value (a single value works for a list key too), so
            // that the common case reads as it always has.
            ArgAction::Append if defaults.len() == 1 => match defaults[0].to_str() {
                Some(d) => {
                    let _ = writeln!(out, "{long} = {}", toml_value(d));
                }
                None => {
                    let _ = writeln!(out, "# {long} = [\"{}\", ...]", value_name(arg));
                }
            },
            ArgAction::Append if !defaults.is_empty() => {
                let list: Vec<String> = defaults
                    .iter()
                    .map(|d| toml_value(&d.to_string_lossy()))
                    .collect();
                let _ = writeln!(out, "{long} = [{}]", list.join(", "));
            }
            ArgAction::Append => {
                let name = value_name(arg);
                let _ = writeln!(out, "# {long} = [\"{name}\", ...]");
            }
            _ => match defaults.first().and_then(|d| d.to_str()) {
                Some(d) => {
                    let _ = writeln!(out, "{long} = {}", toml_value(d));
                }
                None => {
                    let _ = writeln!(out, "# {long} = \"{}\"", value_name(arg));
                }
            },
        }
    }
    out
}

fn value_name(arg: &clap::Arg) -> String {
    arg.get_value_names()
        .and_then(|n| n.first())
        .map_or_else(|| arg.get_id().to_string(), |n| n.to_string())
}

/// A default as a TOML value: a number if it is one, else a string.
fn toml_value(d: &str) -> String {
    if d.parse::<u64>().is_ok() {
        d.to_owned()
    } else {
        toml::Value::String(d.to_owned()).to_string()
    }
}

/// `text`'s paragraphs, word-wrapped at `width` columns.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        for word in para.split_whitespace() {
            if !line.is_empty() && line.len() + 1 + word.len() > width {
                lines.push(std::mem::take(&mut line));
            }
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
        lines.push(line);
    }
    while lines.last().is_some_and(String::is_empty) {
        lines.pop();
    }
    lines
}

#[cfg(test)]
mod tests {
    use clap::Args as _;

    use super::*;

    fn serve() -> Command {
        with_env(ServeArgs::augment_args(Command::new("serve")))
    }

    fn argv(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn file_values_and_flag_precedence() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("edgedns.toml");
        std::fs::write(
            &path,
            "# a comment\napi-listen = \"127.0.0.1:9999\"\nudp-payload = 1400\n\
             keep-xdp = true\nzone-file = [\"/a.zone\", \"/b.zone\"]\nxdp-mode = \"off\"\n",
        )
        .expect("write");
        let p = path.to_str().expect("utf-8");
        let s = settings(
            &without_env(&serve()),
            &argv(&["serve", "--config", p, "--udp-payload", "1232"]),
        )
        .expect("settings");
        assert_eq!(s.args.api_listen.to_string(), "127.0.0.1:9999");
        assert_eq!(
            s.args.daemon.udp_payload, 1232,
            "the flag wins over the file"
        );
        assert!(s.args.daemon.keep_xdp);
        assert_eq!(s.args.daemon.zone_file.len(), 2);
        assert_eq!(s.file.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn listen_addresses_and_interfaces_take_a_list_or_one_value() {
        let p = Path::new("x.toml");
        let listen = |text: &str, extra: &[&str]| {
            let file = ConfigFile::parse(p, text, &serve()).expect("parses");
            let cmd = without_env(&serve());
            let given = cmd
                .clone()
                .try_get_matches_from(argv(&[&["serve"], extra].concat()))
                .expect("given");
            let words: Vec<OsString> = argv(&[&["serve"], extra].concat())
                .into_iter()
                .chain(file.args(&given))
                .collect();
            let m = cmd.try_get_matches_from(words).expect("matches");
            let args = ServeArgs::from_arg_matches(&m).expect("args");
            (
                args.dns_listen
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                args.daemon.iface,
            )
        };
        let (addrs, ifaces) = listen(
            "dns-listen = [\"192.0.2.53:53\", \"[2001:db8::53]:53\"]\niface = [\"veth0\", \"veth1\"]\n",
            &[],
        );
        assert_eq!(addrs, ["192.0.2.53:53", "[2001:db8::53]:53"]);
        assert_eq!(ifaces, ["veth0", "veth1"]);
        let (addrs, ifaces) = listen("dns-listen = \"192.0.2.53:53\"\niface = \"eth0\"\n", &[]);
        assert_eq!(addrs, ["192.0.2.53:53"]);
        assert_eq!(ifaces, ["eth0"]);
        // The command line replaces the file's list whole, and takes a comma-separated one.
        let (addrs, _) = listen(
            "dns-listen = [\"192.0.2.53:53\", \"[2001:db8::53]:53\"]\n",
            &["--dns-listen", "0.0.0.0:53,[::1]:53"],
        );
        assert_eq!(addrs, ["0.0.0.0:53", "[::1]:53"]);
        let (addrs, ifaces) = listen("", &[]);
        assert_eq!(addrs, ["127.0.0.1:5300"]);
        assert_eq!(ifaces, ["lo"]);
        let e = ConfigFile::parse(p, "dns-listen = [\"192.0.2.53:53\", \"nope\"]\n", &serve())
            .expect_err("bad address in the list");
        assert!(e.to_string().starts_with("x.toml:1: `dns-listen`: "), "{e}");
    }

    #[test]
    fn errors_name_key_and_line() {
        let p = Path::new("x.toml");
        let e = ConfigFile::parse(
            p,
            "dns-listen = \"127.0.0.1:53\"\n\napi-lsten = \"x\"\n",
            &serve(),
        )
        .expect_err("unknown key");
        assert_eq!(
            e.to_string(),
            "x.toml:3: unknown key `api-lsten` (the keys are serve's long flags: see `edgedns config example`)"
        );
        let e = ConfigFile::parse(p, "udp-payload = 1232\ndns-listen = \"nope\"\n", &serve())
            .expect_err("bad value");
        assert!(e.to_string().starts_with("x.toml:2: `dns-listen`: "), "{e}");
        let e = ConfigFile::parse(p, "log-level = \"info,=x=y\"\n", &serve()).expect_err("level");
        assert!(e.to_string().starts_with("x.toml:1: `log-level`"), "{e}");
        ConfigFile::parse(p, "log-level = \"warn,dns_user::api=debug\"\n", &serve())
            .expect("directives");
        let e = ConfigFile::parse(p, "keep-xdp = \"yes\"\n", &serve()).expect_err("bool");
        assert!(e.to_string().starts_with("x.toml:1: `keep-xdp`"), "{e}");
        let e = ConfigFile::parse(p, "config = \"/etc/x\"\n", &serve()).expect_err("config");
        assert!(e.to_string().contains("unknown key `config`"), "{e}");
        let e = ConfigFile::parse(p, "a = 1\nb = \n", &serve()).expect_err("syntax");
        assert!(e.to_string().starts_with("x.toml:2: "), "{e}");
    }

    #[test]
    fn example_checks_and_lists_every_flag() {
        let text = example(&serve());
        ConfigFile::parse(Path::new("example"), &text, &serve()).expect("example parses");
        for a in serve().get_arguments() {
            if let Some(long) = a.get_long().filter(|l| *l != "config") {
                assert!(
                    text.lines().any(|l| l.starts_with(&format!("{long} = "))
                        || l.starts_with(&format!("# {long} = "))),
                    "{long} missing from the example"
                );
            }
        }
    }
}
