//! `edgedns`: the daemon and its operator commands. Wiring only; the pieces live in the library.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use dns_user::{
    cli::{self, ApiArgs, RecordCommand, ZoneCommand},
    daemon::{self, Listeners},
    loader::{self, AttachMode},
};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
    Serve(Box<ServeArgs>),
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
        #[arg(long, default_value = "lo")]
        iface: String,
        #[arg(long, default_value = "/var/lib/edgedns")]
        data_dir: PathBuf,
        #[arg(long, default_value = "/sys/fs/bpf")]
        bpffs: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// DNS address and port (UDP and TCP); the fast path answers UDP to this address and port.
    #[arg(long, default_value = "127.0.0.1:5300")]
    dns_listen: SocketAddr,
    /// Update API address.
    #[arg(long, default_value = "127.0.0.1:8053")]
    api_listen: SocketAddr,
    /// Serve external-dns's webhook provider protocol on this address (off by default). It
    /// takes changes without authentication (external-dns sends none): keep it on localhost,
    /// next to external-dns.
    #[arg(long, value_name = "ADDR")]
    webhook_listen: Option<SocketAddr>,
    #[command(flatten)]
    daemon: daemon::Config,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args).await,
            Command::Stats { api } => cli::stats(&api).await,
            Command::Record { api, cmd } => cli::record(&api, cmd).await,
            Command::Zone { api, cmd } => cli::zone(&api, cmd).await,
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

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let listeners = Listeners {
        dns_udp: UdpSocket::bind(args.dns_listen)
            .await
            .with_context(|| format!("binding UDP {}", args.dns_listen))?,
        dns_tcp: TcpListener::bind(args.dns_listen)
            .await
            .with_context(|| format!("binding TCP {}", args.dns_listen))?,
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
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            shutdown_signal().await;
            shutdown.cancel();
        }
    });
    Ok(daemon::run(args.daemon, listeners, shutdown).await?)
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
