//! `cargo xtask run [-- ARGS]`: build, then `edgedns serve ARGS` as root (through `sudo -E` when
//! not root). Without ARGS the daemon's defaults apply: XDP on `lo`, DNS on 127.0.0.1:5300, the
//! API on 127.0.0.1:8053, zone `t.example.net` with `demo.t.example.net. 60 IN A 192.0.2.1`.

use std::{ffi::OsString, net::SocketAddr, os::unix::process::CommandExt as _};

use anyhow::{Context as _, Result};

use crate::{
    bootstrap::{bootstrap, Task},
    build::build_daemon,
    exec::{as_root, cmdline},
};

const DEFAULT_DNS: &str = "127.0.0.1:5300";
const DEFAULT_API: &str = "127.0.0.1:8053";
const DEFAULT_ZONE: &str = "t.example.net";

#[derive(clap::Args)]
pub struct Options {
    /// Arguments for `edgedns serve`, e.g. `-- --iface eth0 --xdp-mode generic`.
    #[arg(last = true)]
    args: Vec<OsString>,
}

pub fn cmd(opts: Options) -> Result<()> {
    let ready = bootstrap(Task::Run)?;
    let bin = build_daemon(&ready)?;

    let dns = reachable(flag(&opts.args, "--dns-listen").unwrap_or(DEFAULT_DNS.into()));
    let api = reachable(flag(&opts.args, "--api-listen").unwrap_or(DEFAULT_API.into()));
    let zone = flag(&opts.args, "--zone").unwrap_or(DEFAULT_ZONE.into());
    let zone = zone.trim_end_matches('.');
    let (host, port) = dns.rsplit_once(':').unwrap_or((&dns, "53"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    println!("Try it from another shell:");
    println!("  dig @{host} -p {port} demo.{zone} A");
    println!(
        "  curl -X PUT http://{api}/v1/zones/{zone}/records/www/A \
         -H 'content-type: application/json' -d '{{\"ttl\": 30, \"records\": [\"192.0.2.7\"]}}'"
    );
    println!("  dig @{host} -p {port} www.{zone} A");
    println!("  {} stats --api {api}", bin.display());
    if flag(&opts.args, "--api-token-file").is_some() {
        println!("  (the API wants the token from --api-token-file)");
    }

    let mut cmd = as_root(&bin, ready.root)?;
    cmd.arg("serve").args(&opts.args);
    eprintln!("xtask: {}", cmdline(&cmd));
    // exec: Ctrl-C and SIGTERM go straight to the daemon (or to sudo, which forwards them).
    let err = cmd.exec();
    Err(err).with_context(|| format!("failed to exec `{}`", cmdline(&cmd)))
}

/// The value of `--name VALUE` or `--name=VALUE` in `args` (the last one wins, as in clap).
fn flag(args: &[OsString], name: &str) -> Option<String> {
    let args: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut found = None;
    for (i, arg) in args.iter().enumerate() {
        if arg == name {
            found = args.get(i + 1).cloned();
        } else if let Some(v) = arg.strip_prefix(name).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_owned());
        }
    }
    found
}

/// A listen address a client on this machine can use: unspecified addresses become loopback.
fn reachable(listen: String) -> String {
    match listen.parse::<SocketAddr>() {
        Ok(SocketAddr::V4(a)) if a.ip().is_unspecified() => format!("127.0.0.1:{}", a.port()),
        Ok(SocketAddr::V6(a)) if a.ip().is_unspecified() => format!("[::1]:{}", a.port()),
        _ => listen,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        let args: Vec<OsString> = ["--iface", "eth0", "--dns-listen=0.0.0.0:53", "--zone", "x."]
            .map(OsString::from)
            .to_vec();
        assert_eq!(flag(&args, "--iface").as_deref(), Some("eth0"));
        assert_eq!(flag(&args, "--dns-listen").as_deref(), Some("0.0.0.0:53"));
        assert_eq!(flag(&args, "--zone").as_deref(), Some("x."));
        assert_eq!(flag(&args, "--api-listen"), None);
        assert_eq!(reachable("0.0.0.0:53".into()), "127.0.0.1:53");
        assert_eq!(reachable("[::]:53".into()), "[::1]:53");
        assert_eq!(reachable("10.0.0.1:53".into()), "10.0.0.1:53");
    }
}
