//! `edgedns`: the daemon and its operator commands. Wiring only; the pieces live in the library.

use std::{ffi::OsString, io::IsTerminal as _, path::PathBuf};

use anyhow::{bail, Context as _};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use dns_user::{
    api::ApiToken,
    cli::{self, ApiArgs, RecordCommand, ZoneCommand},
    config::{self, LogFormat, ServeArgs},
    daemon::{self, Listeners},
    fallback,
    loader::{self, AttachMode},
    sd_notify::Notifier,
    zonefile,
};
use tokio::{
    net::TcpListener,
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::{
    fmt, layer::SubscriberExt as _, reload, util::SubscriberInitExt as _, EnvFilter, Registry,
};

#[derive(Subcommand)]
enum ConfigCommand {
    /// Check FILE as `serve --config FILE` would read it (the environment left out), with the
    /// token and zone files it names, without starting anything: exit status 0 and a summary,
    /// or the file, line and key at fault.
    Check { file: PathBuf },
    /// Print a configuration file with every key, its help and its default.
    Example,
}

#[derive(Parser)]
#[command(
    name = "edgedns",
    version,
    about = "Authoritative DNS with an XDP fast path"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: XDP fast path, fallback DNS server and update API.
    ///
    /// Settings come from flags, EDGEDNS_* environment variables and a configuration file
    /// (--config), in that order of precedence. SIGHUP reloads the API token, the TSIG keys, the
    /// log level, the transfer and update access lists and the zone files; SIGTERM and SIGINT
    /// stop the server.
    Serve(Box<ServeArgs>),
    /// Check a configuration file, or print one with every key.
    Config {
        #[command(subcommand)]
        cmd: ConfigCommand,
    },
    /// Print a completion script for SHELL.
    ///
    /// E.g. `edgedns completions bash > /etc/bash_completion.d/edgedns`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff: `edgedns man | man -l -`), or with `--dir` write it and one
    /// page per subcommand (edgedns-serve.1, edgedns-zone-import.1, ...) into a directory.
    Man {
        /// Write every page into this directory instead of printing the top page.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the fast path's counters (from a running server's API).
    Stats {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Change or list records through a running server's API.
    Record {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        cmd: RecordCommand,
    },
    /// Create, list, import or export zones through a running server's API.
    Zone {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        cmd: ZoneCommand,
    },
    /// A fleet of edges on etcd: seed it from a single host's store, show its edges.
    Fleet {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        cmd: cli::FleetCommand,
    },
    /// Attach a pass-everything XDP program to an interface until interrupted: the peer end of a
    /// veth pair needs one for XDP_TX frames to be delivered.
    XdpPass {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value = "driver")]
        xdp_mode: AttachMode,
    },
    /// Detach a fast path left answering by `serve --keep-xdp` (or a crash) and free its maps:
    /// removes the pins of the instance with this data directory and interface.
    XdpDetach {
        /// The serve's interfaces, all of them (repeatable, or comma-separated).
        #[arg(long, default_value = "lo", value_delimiter = ',')]
        iface: Vec<String>,
        #[arg(long, default_value = "/var/lib/edgedns")]
        data_dir: PathBuf,
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let command = match cli.command {
        Command::Serve(_) => return serve_main(),
        Command::Config { cmd } => return config_command(cmd),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut command(), "edgedns", &mut std::io::stdout());
            return Ok(());
        }
        Command::Man { dir: None } => {
            return clap_mangen::Man::new(command())
                .render(&mut std::io::stdout())
                .context("writing the manual page");
        }
        Command::Man { dir: Some(dir) } => {
            return clap_mangen::generate_to(command(), &dir)
                .with_context(|| format!("writing the manual pages into {}", dir.display()));
        }
        other => other,
    };
    init_logging(LogFormat::Text, "info")?;
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match command {
            Command::Serve(_)
            | Command::Config { .. }
            | Command::Completions { .. }
            | Command::Man { .. } => {
                unreachable!("handled above")
            }
            Command::Stats { api } => cli::stats(&api).await,
            Command::Record { api, cmd } => cli::record(&api, cmd).await,
            Command::Zone { api, cmd } => cli::zone(&api, cmd).await,
            Command::Fleet { api, cmd } => cli::fleet(&api, cmd).await,
            Command::XdpDetach {
                iface,
                data_dir,
                bpffs,
            } => {
                let dir = loader::pin_dir(&bpffs, &data_dir, &iface);
                if !dir.exists() {
                    bail!("nothing pinned at {} (is --bpffs right?)", dir.display());
                }
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing {}", dir.display()))?;
                info!(dir = %dir.display(), "pins removed: the XDP program is detached");
                Ok(())
            }
            Command::XdpPass { iface, xdp_mode } => {
                let _prog = loader::attach_pass(&iface, xdp_mode)
                    .with_context(|| format!("attaching the pass program to {iface}"))?;
                info!(
                    iface,
                    "pass program attached; Ctrl-C or SIGTERM detaches it"
                );
                shutdown_signal().await;
                Ok(())
            }
        }
    })
}

/// The command line's definition, with every `serve` flag also read from `EDGEDNS_<FLAG>`.
fn command() -> clap::Command {
    Cli::command().mut_subcommand("serve", config::with_env)
}

/// `serve`'s definition, alone.
fn serve_command() -> clap::Command {
    command()
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

fn config_command(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Check { file } => {
            let args = config::check(&serve_command(), &file)?;
            // What start-up reads before it attaches anything: the token and the zone files.
            if let Some(path) = &args.daemon.api_token_file {
                ApiToken::from_file(path)?;
            }
            for path in &args.daemon.zone_file {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?;
                zonefile::parse(&path.display().to_string(), &text, None)?;
            }
            println!(
                "{}: ok (DNS on {}, API on {}, data in {}, {} zone files)",
                file.display(),
                args.dns_listen
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
                args.api_listen,
                args.daemon.data_dir.display(),
                args.daemon.zone_file.len()
            );
        }
        ConfigCommand::Example => print!("{}", config::example(&serve_command())),
    }
    Ok(())
}

/// `serve`: settings from flags, environment and file; logging; then the daemon until SIGTERM
/// or SIGINT, reloading on SIGHUP.
fn serve_main() -> anyhow::Result<()> {
    let serve = serve_command();
    // `serve` and what follows it: the settings are parsed again from these at each reload.
    let argv: Vec<OsString> = std::env::args_os()
        .skip(1)
        .skip_while(|a| a != "serve")
        .collect();
    let settings = config::settings(&serve, &argv)?;
    let log = init_logging(settings.args.log_format, &settings.args.log_level)?;
    if let Some(file) = &settings.file {
        info!(file = %file.display(), "configuration file read");
    }
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(serve_settings(Reloader {
        serve,
        argv,
        started: settings,
        log,
        tx: None,
    }))
}

async fn serve_settings(mut reloader: Reloader) -> anyhow::Result<()> {
    // Handlers first: from here on no signal kills the daemon with its pins half-released.
    let mut signals = Signals::new()?;
    let args = reloader.started.args.clone();
    let workers = args.udp_workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        usize::from,
    );
    let (mut dns_udp, mut dns_tcp) = (Vec::new(), Vec::new());
    for addr in &args.dns_listen {
        dns_udp.extend(
            fallback::bind_udp(*addr, workers).with_context(|| format!("binding UDP {addr}"))?,
        );
        dns_tcp.push(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding TCP {addr}"))?,
        );
    }
    let listeners = Listeners {
        dns_udp,
        dns_tcp,
        api: TcpListener::bind(args.api_listen)
            .await
            .with_context(|| format!("binding the API on {}", args.api_listen))?,
        webhook: match args.webhook_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding the webhook provider on {addr}"))?,
            ),
            None => None,
        },
    };
    let shutdown = CancellationToken::new();
    let (tx, rx) = mpsc::channel(1);
    reloader.tx = Some(tx);
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            loop {
                tokio::select! {
                    _ = signals.int.recv() => { info!("SIGINT"); break }
                    _ = signals.term.recv() => { info!("SIGTERM"); break }
                    _ = signals.hup.recv() => reloader.reload(),
                }
            }
            shutdown.cancel();
        }
    });
    let control = daemon::Control {
        notify: Notifier::from_env(),
        reload: Some(rx),
    };
    Ok(daemon::run_with(args.daemon, listeners, shutdown, control).await?)
}

struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        let on = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("installing the {name} handler"))
        };
        Ok(Self {
            int: on(SignalKind::interrupt(), "SIGINT")?,
            term: on(SignalKind::terminate(), "SIGTERM")?,
            hup: on(SignalKind::hangup(), "SIGHUP")?,
        })
    }
}

/// What a SIGHUP needs: how to read the settings again, the ones in force, the log filter, and
/// the daemon's end of the reload channel.
struct Reloader {
    serve: clap::Command,
    argv: Vec<OsString>,
    /// The settings read at start: what needs a restart is compared with these, so that every
    /// reload tells what is still waiting for one.
    started: config::Settings,
    log: LogHandle,
    tx: Option<mpsc::Sender<daemon::Config>>,
}

impl Reloader {
    fn reload(&mut self) {
        info!("SIGHUP: reloading the configuration");
        let new = match config::settings(&self.serve, &self.argv) {
            Ok(new) => new,
            Err(e) => {
                warn!(
                    "reload: keeping the running settings: {}",
                    dns_user::error_chain(&e)
                );
                return;
            }
        };
        for key in self.started.restart_only_changes(&self.serve, &new) {
            warn!(
                key,
                "reload: setting changed, but it takes effect only at a restart"
            );
        }
        match log_filter(&new.args.log_level) {
            Ok(filter) => {
                if let Err(e) = self.log.reload(filter) {
                    warn!("reload: log-level: {e}");
                }
            }
            Err(e) => warn!("reload: log-level: {e}"),
        }
        if let Some(tx) = &self.tx {
            if tx.try_send(new.args.daemon).is_err() {
                warn!(
                    "reload: the previous reload is still being applied; send SIGHUP again later"
                );
            }
        }
    }
}

type LogHandle = reload::Handle<EnvFilter, Registry>;

/// The log filter: RUST_LOG if it is set, else `level` (`serve --log-level`).
fn log_filter(level: &str) -> anyhow::Result<EnvFilter> {
    if std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
        return EnvFilter::try_from_default_env().context("RUST_LOG");
    }
    EnvFilter::try_new(level).with_context(|| format!("bad log level {level:?}"))
}

/// Logs to stderr, one line per event: text (coloured only on a terminal, so journald and
/// files get no escape codes), or a JSON object with the fields `timestamp`, `level`,
/// `target`, `message` and the event's own.
fn init_logging(format: LogFormat, level: &str) -> anyhow::Result<LogHandle> {
    let (filter, handle) = reload::Layer::new(log_filter(level)?);
    let registry = tracing_subscriber::registry().with(filter);
    let layer = fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => registry
            .with(layer.with_ansi(std::io::stderr().is_terminal()))
            .init(),
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .init(),
    }
    Ok(handle)
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("no SIGTERM handler: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
