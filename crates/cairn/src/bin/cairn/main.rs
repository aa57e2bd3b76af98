//! `cairn`: the owner's tool. Files are chunked, encrypted and erasure-coded
//! here, on the owner's machine; nodes only ever see shards. Everything it
//! does is `cairn-client`'s; this file parses arguments and renders the
//! reports, as text for people or, with `--json`, one JSON object a line
//! from the same report types.

mod cli;

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use cairn_client::account::{self, NodeReport};
use cairn_client::home::parse_node;
use cairn_client::session::{FileHealth, GetReport, TransferReport};
use cairn_client::{ClientHome, Excludes, Policy, Progress, Selector, Session, SnapshotPick};
use cairn_node::net::discovery::LanDiscovery;
use cairn_proto::NodeAddr;

use cli::{Cli, Command, SwarmCommand};

#[tokio::main(flavor = "multi_thread")]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Partial>().is_some() => {
            eprintln!("cairn: {e}");
            std::process::ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("cairn: {e}");
            let mut source = e.source();
            while let Some(cause) = source {
                eprintln!("  because: {cause}");
                source = cause.source();
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// A put stored what it could read and left some files out (or kept their
/// previous version): exit status 3, as restic's.
#[derive(Debug)]
struct Partial(usize);

impl std::fmt::Display for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} warnings (above): some files or directories could not be read; everything else is stored",
            self.0
        )
    }
}

impl std::error::Error for Partial {}

/// Prints a report: as one JSON line with `--json`, else as `text` says.
struct Out {
    json: bool,
}

impl Out {
    fn show<T: Serialize>(&self, report: &T, text: impl FnOnce(&T) -> String) {
        if self.json {
            match serde_json::to_string(report) {
                Ok(line) => println!("{line}"),
                Err(e) => eprintln!("cairn: cannot render the report as JSON: {e}"),
            }
        } else {
            println!("{}", text(report));
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let home = ClientHome::locate(cli.home)?;
    let out = Out { json: cli.json };
    match cli.command {
        Command::Init { force } => {
            let report = account::init(&home, force)?;
            out.show(&report, |r| {
                format!(
                    "Your recovery phrase (write it down; it is the only way back to your files):\n\n    {}\n\nOwner id:   {}\nClient key: {}  (add it to each node's [network] allow list)",
                    r.phrase, r.owner, r.client_key
                )
            });
        }
        Command::Recover { node } => {
            let mut phrase = String::new();
            std::io::stdin().read_to_string(&mut phrase)?;
            let nodes = node
                .iter()
                .map(|spec| {
                    let (id, addr) = spec
                        .split_once('@')
                        .with_context(|| format!("--node {spec}: give ID@HOST:PORT"))?;
                    Ok(NodeAddr {
                        node: parse_node(id, &format!("--node {spec}"))?,
                        addr: addr.to_owned(),
                        site: None,
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = account::recover(home, &phrase, &nodes).await?;
            for note in &report.notes {
                eprintln!("cairn: {note}");
            }
            out.show(&report, |r| {
                format!(
                    "recovered owner {}: {} snapshots, {} nodes",
                    r.owner, r.snapshots, r.nodes
                )
            });
        }
        Command::Id => {
            let report = account::identity(&home)?;
            out.show(&report, |r| {
                format!(
                    "owner id:      {}\nclient key:    {}\ntransfer card: {}:{}  (give this to someone handing you a box)",
                    r.owner, r.client_key, r.owner, r.client_key
                )
            });
        }
        Command::AddNode {
            id,
            addr,
            site,
            steward,
        } => {
            let node = parse_node(&id, &format!("node id {id}"))?;
            account::add_node(&home, &NodeAddr { node, addr, site }, steward)?;
        }
        Command::Discover {
            seconds,
            interfaces,
            add,
        } => discover(&home, &out, seconds, &interfaces, add).await?,
        Command::Nodes => {
            for node in account::nodes(&home).await? {
                out.show(&node, node_line);
            }
        }
        Command::Claim { id, addr, site } => {
            let node = parse_node(&id, &format!("node id {id}"))?;
            let entry = NodeAddr { node, addr, site };
            let mut report = account::claim(&home, &entry, |left| {
                eprintln!(
                    "This claim waits for you at the box: press its button once now (its LED blips twice a second); {left} s left."
                )
            })
            .await?;
            report.claimed = id;
            out.show(&report, |r| {
                format!(
                    "claimed {}: the box is yours and is in your node list",
                    r.claimed
                )
            });
        }
        Command::Transfer { node, to } => {
            let report = account::transfer(&home, &node, &to).await?;
            out.show(&report, |r| {
                format!(
                    "{} now belongs to owner {}. It admits your client key only as a member of its swarm, if you share one; without that, your shards on it stay until their leases end, and your steward repairs them elsewhere.",
                    r.transferred, r.to
                )
            });
        }
        Command::Drain { node, undo } => {
            let report = account::drain(&home, &node, !undo).await?;
            out.show(&report, |r| {
                if undo {
                    format!("{} takes new shards again", r.node)
                } else {
                    format!(
                        "{} is draining: it takes no new shards, and clients place new ones elsewhere.\nIt still holds {} shards ({}) for their owners; each owner's steward moves them to other nodes (shards nobody stewards stay until their leases end). When it holds none, it can leave.",
                        r.node,
                        r.shards,
                        size(r.bytes)
                    )
                }
            });
        }
        Command::Settings {
            node,
            site,
            no_site,
            quota_gib,
            quota_all,
            donate_to,
            donate_to_any,
            per_owner_mib,
            no_share,
            longest_lease_days,
        } => {
            let owners = donate_to
                .iter()
                .map(|hex| {
                    cairn_proto::ids::OwnerId::from_hex(hex).map_err(|e| {
                        anyhow::anyhow!(
                            "--donate-to {hex:?} is not an owner id (64 hex digits, as `cairn usage` shows): {e}"
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let change = cairn_proto::SettingsChange {
                site: if no_site { Some(None) } else { site.map(Some) },
                quota_gib: if quota_all {
                    Some(None)
                } else {
                    quota_gib.map(Some)
                },
                donation_owners: if donate_to_any {
                    Some(Vec::new())
                } else {
                    (!owners.is_empty()).then_some(owners)
                },
                per_owner_mib: if no_share {
                    Some(None)
                } else {
                    per_owner_mib.map(Some)
                },
                longest_lease_days,
            };
            let report = account::settings(&home, &node, change).await?;
            out.show(&report, |r| {
                let mut lines = vec![
                    format!("{}:", r.node),
                    format!("  site: {}", r.site.as_deref().unwrap_or("(none)")),
                    format!(
                        "  space given: {}",
                        r.quota_gib
                            .map_or("all free space".to_owned(), |q| format!("{q} GiB"))
                    ),
                    format!(
                        "  who may store: {}",
                        if r.donation_owners.is_empty() {
                            "any owner of the swarm".to_owned()
                        } else {
                            r.donation_owners.join(", ")
                        }
                    ),
                    format!(
                        "  each other owner's share: {}",
                        r.per_owner_mib
                            .map_or("no share".to_owned(), |m| format!("{m} MiB"))
                    ),
                    format!("  longest lease: {} days", r.longest_lease_days),
                ];
                if r.restarting {
                    lines.push(
                        "Kept on the box; it restarts its services for a moment to take them."
                            .into(),
                    );
                }
                lines.join("\n")
            });
        }
        Command::Panel { node, minutes, at } => {
            let link = account::panel_link(&home, &node, minutes, at.as_deref())?;
            #[derive(serde::Serialize)]
            struct Link {
                link: String,
            }
            out.show(&Link { link }, |l| {
                format!(
                    "{}\nOpen it within {minutes} minutes on the box's network; anyone with it sees the owner's view until then.",
                    l.link
                )
            });
        }
        Command::AdoptDisks { node, from } => {
            for r in account::adopt_disks(&home, &node, from.as_deref()).await? {
                out.show(&r, |r| {
                    let steward = match &r.steward_error {
                        None => format!("your steward re-pointed {} shards to it (nothing is rebuilt)", r.repointed),
                        Some(e) => format!("your steward could not be told ({e}); run this again, or it rebuilds those shards after its grace"),
                    };
                    format!(
                        "{} took over {} disk(s) of {} with {} shards; {steward}",
                        r.node, r.disks, r.from, r.shards
                    )
                });
            }
        }
        Command::Update {
            mut args,
            all,
            version,
            allow_downgrade,
            from,
            wait,
        } => {
            let bundle_path = std::path::PathBuf::from(args.pop().unwrap_or_default());
            let nodes = if all {
                anyhow::ensure!(args.is_empty(), "give either node ids or --all, not both");
                account::known_nodes(&home)?
            } else {
                anyhow::ensure!(
                    !args.is_empty(),
                    "name the boxes to update (cairn update NODE… BUNDLE), or --all"
                );
                args
            };
            let bundle = account::bundle_ref(&bundle_path, version.as_deref())?;
            let reports = account::update(
                &home,
                &nodes,
                &bundle_path,
                bundle,
                allow_downgrade,
                from.as_deref(),
                std::time::Duration::from_secs(wait),
            )
            .await?;
            let mut failed = 0;
            for r in &reports {
                failed += usize::from(r.error.is_some());
                out.show(r, |r| match (&r.error, &r.from) {
                    (Some(e), _) => format!("{}: not updated: {e}", r.node),
                    (None, _) if r.already && r.running == r.version => {
                        format!("{}: runs {} already; nothing sent", r.node, r.version)
                    }
                    (None, _) if r.already => format!(
                        "{}: is installing an update now (it runs {}); nothing sent. `cairn system {}` tells how it goes.",
                        r.node, r.running, r.node
                    ),
                    (None, Some(from)) => format!(
                        "{}: fetched {} from {from}; it installs it into its other slot and reboots into it (it ran {}). `cairn system {}` tells how it went.",
                        r.node, r.version, r.running, r.node
                    ),
                    (None, None) => format!(
                        "{}: has {} ({}{}); it installs it into its other slot and reboots into it (it ran {}). `cairn system {}` tells how it went.",
                        r.node,
                        r.version,
                        size(r.sent),
                        match (r.resumed_from, &r.last_interruption) {
                            (0, None) => " sent".to_owned(),
                            (at, None) => format!(" sent, resumed at {}", size(at)),
                            (at, Some(last)) => format!(
                                " sent{}, going on after {} interruption(s), the last {last}",
                                if at > 0 {
                                    format!(", resumed at {}", size(at))
                                } else {
                                    String::new()
                                },
                                r.interruptions
                            ),
                        },
                        r.running,
                        r.node
                    ),
                });
            }
            anyhow::ensure!(
                failed == 0,
                "{failed} of {} boxes were not updated",
                reports.len()
            );
        }
        Command::System { nodes } => {
            let nodes = if nodes.is_empty() {
                account::known_nodes(&home)?
            } else {
                nodes
            };
            for r in account::systems(&home, &nodes).await? {
                out.show(&r, |r| match (&r.system, &r.error) {
                    (None, e) => format!("{}: {}", r.node, e.as_deref().unwrap_or("no answer")),
                    (Some(s), _) => {
                        let mut line = format!(
                            "{}: runs {}{}",
                            r.node,
                            s.version,
                            s.slot.as_deref().map_or(String::new(), |slot| format!(
                                " (slot {})",
                                slot.to_uppercase()
                            ))
                        );
                        if s.installing {
                            line.push_str("; installing an update");
                        } else if let Some((b, have)) = &s.receiving {
                            line.push_str(&format!(
                                "; receiving {} ({} of {}{})",
                                b.version,
                                size(*have),
                                size(b.size),
                                s.fetching_from
                                    .map(|f| format!(", fetching from {}", f.to_human()))
                                    .unwrap_or_default()
                            ));
                        }
                        if let Some(trouble) = &s.fetch_trouble {
                            line.push_str(&format!("; fetch trouble: {trouble}"));
                        }
                        if let Some(serving) = &s.serving {
                            line.push_str(&format!("; serves {} to other boxes", serving.version));
                        }
                        if let Some(last) = &s.last {
                            line.push_str(&format!(
                                "; last update: {} {}: {}",
                                last.version, last.result, last.reason
                            ));
                        }
                        line
                    }
                });
            }
        }
        Command::Usage { node } => {
            let rows = account::usage(&home, &node).await?;
            if rows.is_empty() && !out.json {
                println!("{node} holds no owner's shards");
            }
            for row in &rows {
                out.show(row, |r| {
                    format!(
                        "{}  {:>10}  {:>8} shards{}{}",
                        r.owner,
                        size(r.bytes),
                        r.shards,
                        if r.you { "  (you)" } else { "" },
                        if r.evicted { "  evicted" } else { "" }
                    )
                });
            }
        }
        Command::Evict { node, owner, lift } => {
            let report = account::evict(&home, &node, &owner, !lift).await?;
            out.show(&report, |r| {
                if lift {
                    format!("{} takes shards from owner {} again", r.node, r.owner)
                } else {
                    format!(
                        "owner {} is evicted from {}: {} of its shards there went (their stewards store them elsewhere), and its puts are refused from now on",
                        r.owner, r.node, r.claims
                    )
                }
            });
        }
        Command::Put {
            paths,
            exclude,
            exclude_file,
        } => {
            let mut excludes = Excludes { patterns: exclude };
            for file in &exclude_file {
                excludes.add_file(file)?;
            }
            let mut session = Session::open(home).await?;
            let result = session.put(&paths, &excludes, &Bar::new()).await;
            notes(&session);
            let summary = result?;
            for warning in &summary.warnings {
                eprintln!("warning: {warning}");
            }
            out.show(&summary, |r| {
                let made = match &r.snapshot {
                    Some(id) => format!("snapshot {id}"),
                    None => "nothing changed, no new snapshot".to_owned(),
                };
                format!(
                    "{made}: {} new, {} changed, {} unchanged files ({} read); {} segments with {} of shards uploaded, {} chunks already stored",
                    r.files_new,
                    r.files_changed,
                    r.files_unchanged,
                    size(r.bytes_read),
                    r.segments_uploaded,
                    size(r.shard_bytes),
                    r.chunks_reused
                )
            });
            session.close().await;
            if summary.partial {
                return Err(Partial(summary.warnings.len()).into());
            }
        }
        Command::Restore {
            path,
            target,
            at,
            snapshot,
        } => {
            let pick = match (at, snapshot) {
                (Some(at), _) => SnapshotPick::At(parse_time(&at)?),
                (None, Some(id)) => SnapshotPick::Id(id),
                (None, None) => SnapshotPick::Latest,
            };
            let session = Session::open(home).await?;
            let result = session.restore(&path, &pick, &target, &Bar::new()).await;
            notes(&session);
            out.show(&result?, |r| {
                format!(
                    "restored {} from snapshot {} to {}: {} files ({}), {} directories, {} links",
                    path,
                    r.snapshot,
                    r.restored_to,
                    r.files,
                    size(r.bytes),
                    r.dirs,
                    r.symlinks
                )
            });
            session.close().await;
        }
        Command::Snapshots => {
            let session = Session::open(home).await?;
            notes(&session);
            for snapshot in session.snapshots() {
                out.show(&snapshot, |s| {
                    format!("{}  {}  {}", s.id, when(s.time), s.made_by)
                });
            }
            session.close().await;
        }
        Command::Forget {
            keep_last,
            keep_daily,
            keep_weekly,
            keep_monthly,
            prune,
        } => {
            let policy = Policy {
                last: keep_last,
                daily: keep_daily,
                weekly: keep_weekly,
                monthly: keep_monthly,
            };
            let mut session = Session::open(home).await?;
            let result = session.forget(policy).await;
            notes(&session);
            out.show(&result?, |r| {
                format!(
                    "snapshots kept: {}, forgotten: {}{}",
                    r.kept.len(),
                    r.forgotten.len(),
                    if prune {
                        ""
                    } else {
                        " (`cairn prune` gives their space back)"
                    }
                )
            });
            if prune {
                let result = session.prune().await;
                notes(&session);
                out.show(&result?, prune_line);
            }
            session.close().await;
        }
        Command::Prune => {
            let mut session = Session::open(home).await?;
            let result = session.prune().await;
            notes(&session);
            out.show(&result?, prune_line);
            session.close().await;
        }
        Command::Get {
            path,
            output,
            at,
            version,
        } => {
            let session = Session::open(home).await?;
            let selector = match (at, version) {
                (Some(at), _) => Selector::At(parse_time(&at)?),
                (None, Some(n)) => Selector::Version(n),
                (None, None) => Selector::Latest,
            };
            let bar = Bar::new();
            let result = match &output {
                // `-o DIR` puts the file inside DIR under its own name, as cp does.
                Some(out) => {
                    let target = if out.is_dir() {
                        out.join(Path::new(&path).file_name().unwrap_or(path.as_ref()))
                    } else {
                        out.clone()
                    };
                    session.get_to_path(&path, selector, &target, &bar).await
                }
                None => session
                    .get_to_writer(&path, selector, std::io::stdout(), &bar)
                    .await
                    .map(|(report, _)| report),
            };
            notes(&session);
            let report = result?;
            // The report never mixes with file bytes on standard output.
            let line = if out.json {
                serde_json::to_string(&report)?
            } else {
                get_line(&report)
            };
            if output.is_some() {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
            session.close().await;
        }
        Command::Ls { prefix } => {
            let session = Session::open(home).await?;
            let listed = session.list(prefix.as_deref().unwrap_or("/")).await;
            notes(&session);
            for entry in listed? {
                out.show(&entry, |e| {
                    let link = if e.kind == "symlink" { "  (link)" } else { "" };
                    format!("{:>10}  {}  {}{link}", size(e.size), when(e.time), e.path)
                });
            }
            session.close().await;
        }
        Command::Versions { path } => {
            let session = Session::open(home).await?;
            notes(&session);
            let versions = session.versions(&path).await;
            session.close().await;
            for v in versions? {
                out.show(&v, |v| {
                    if v.removed {
                        format!("v{}  {}  removed", v.version, when(v.time))
                    } else {
                        format!("v{}  {}  {}", v.version, when(v.time), size(v.size))
                    }
                });
            }
        }
        Command::Rm { path } => {
            let mut session = Session::open(home).await?;
            let result = session.remove(&path).await;
            notes(&session);
            out.show(&result?, |r| {
                format!(
                    "removed {} in snapshot {} (earlier versions stay readable with --version or --at)",
                    r.removed, r.snapshot
                )
            });
            session.close().await;
        }
        Command::Status { prefix } => {
            let session = Session::open(home).await?;
            let result = session.status(prefix.as_deref().unwrap_or("/")).await;
            notes(&session);
            for file in result? {
                out.show(&file, health_line);
            }
            session.close().await;
        }
        Command::Swarm(command) => swarm_command(&home, &out, command).await?,
        Command::Members { node } => {
            let (asked, members) = account::members(&home, node.as_deref()).await?;
            for m in &members {
                out.show(m, |m| {
                    format!(
                        "{} {} {}, {} free of {}{} ({}); router: {}{}{}",
                        m.id,
                        m.addr,
                        if m.up { "up" } else { "DOWN" },
                        size(m.free),
                        size(m.capacity),
                        site(&m.site),
                        m.software,
                        m.nat.to_lowercase(),
                        m.ipv6
                            .as_ref()
                            .map(|v6| format!(", ipv6 {v6}"))
                            .unwrap_or_default(),
                        m.path
                            .as_ref()
                            .map(|p| format!(", reached {p}"))
                            .unwrap_or_default()
                    )
                });
            }
            if !out.json {
                println!("(as node {} sees the swarm)", asked.to_human());
            }
        }
        Command::Join { node, invite } => {
            let report = account::join(&home, &node, &invite).await?;
            out.show(&report, |r| format!("{} joined swarm {}", r.node, r.swarm));
        }
    }
    Ok(())
}

async fn swarm_command(home: &ClientHome, out: &Out, command: SwarmCommand) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct SwarmId {
        swarm: String,
    }
    match command {
        SwarmCommand::Create => {
            let swarm = account::swarm_create(home)?;
            out.show(
                &SwarmId {
                    swarm: swarm.to_hex(),
                },
                |s| {
                    format!(
                        "founded swarm {}; invite nodes with `cairn swarm invite <node id>`",
                        s.swarm
                    )
                },
            );
        }
        SwarmCommand::Invite { key, client, days } => {
            let report = account::swarm_invite(home, &key, client, days)?;
            out.show(&report, |r| r.ticket.clone());
        }
        SwarmCommand::Accept { ticket } => {
            let swarm = account::swarm_accept(home, &ticket)?;
            // As before, only words: a script learns the swarm from `cairn id`.
            println!("your client is a member of swarm {}", swarm.to_hex());
        }
        SwarmCommand::Remove { key } => {
            let report = account::swarm_remove(home, &key).await?;
            for failure in &report.failures {
                eprintln!("cairn: {failure}");
            }
            out.show(&report, |r| {
                format!(
                    "removed {}: {} nodes told; they refuse it from now on",
                    r.removed, r.nodes_told
                )
            });
        }
    }
    Ok(())
}

async fn discover(
    home: &ClientHome,
    out: &Out,
    seconds: u64,
    interfaces: &[String],
    add: bool,
) -> anyhow::Result<()> {
    #[derive(Serialize)]
    struct Heard {
        id: String,
        addr: String,
        swarm: Option<String>,
        site: Option<String>,
        software: String,
        known: bool,
    }
    let discovery = LanDiscovery::start(interfaces)?;
    let found = discovery.browse_for(Duration::from_secs(seconds)).await;
    discovery.shutdown();
    let found = found?;
    let mut config = home.config()?;
    let yours = config
        .member()
        .ok()
        .flatten()
        .map(|c| c.swarm)
        .or_else(|| home.secret().ok().map(|s| s.keys().owner_id()));
    let mut added = 0;
    for heard in &found {
        let mut known = config.knows(heard.at.node);
        if add && !known {
            config.add_node(&heard.at);
            added += 1;
        }
        let swarm = match heard.swarm {
            None => "in no swarm".to_owned(),
            Some(s) if Some(s) == yours => "in your swarm".to_owned(),
            Some(s) => format!("in swarm {}", &s.to_hex()[..16]),
        };
        let line = format!(
            "{} {} {swarm}{}{}",
            heard.at.node.to_human(),
            heard.at.addr,
            site(&heard.at.site),
            if known { ", one of your nodes" } else { "" }
        );
        known |= add;
        let report = Heard {
            id: heard.at.node.to_human(),
            addr: heard.at.addr.clone(),
            swarm: heard.swarm.map(|s| s.to_hex()),
            site: heard.at.site.clone(),
            software: heard.software.clone(),
            known,
        };
        out.show(&report, |_| line);
    }
    if added > 0 {
        home.save_config(&config)?;
    }
    if !out.json {
        match (found.len(), add) {
            (0, _) => println!(
                "no Cairn box answered in {seconds} s; is it plugged into this LAN and its LED steady or blinking?"
            ),
            (_, true) => println!("{added} added to your nodes"),
            (_, false) => println!(
                "(addresses come from the LAN and are checked when you connect; `cairn discover --add` adds them)"
            ),
        }
    }
    Ok(())
}

/// Prints the notes a session collected (warnings that did not fail it).
fn notes(session: &Session) {
    for note in session.take_notes() {
        eprintln!("cairn: {note}");
    }
}

fn node_line(node: &NodeReport) -> String {
    let mut line = format!("{} {} ", node.id, node.addr);
    match (&node.state, node.free) {
        (Some(state), Some(free)) => {
            let mut words = vec![state.clone()];
            if node.draining == Some(true) {
                words.push("draining".into());
            }
            if node.owner.is_none() {
                words.push("unclaimed".into());
            } else if node.yours {
                words.push("yours".into());
            }
            line += &format!("up ({}), {} free", words.join(", "), size(free));
        }
        _ => line += "DOWN",
    }
    line += &site(&node.site);
    if let Some(path) = &node.path {
        line += &format!(", reached {path}");
    }
    if let Some(error) = node.error.as_ref().filter(|_| node.state.is_none()) {
        line += &format!("\n    {error}");
    }
    for reason in node.reasons.iter().flatten() {
        line += &format!("\n    {reason}");
    }
    line
}

fn get_line(report: &GetReport) -> String {
    let t: &TransferReport = &report.transfer;
    let mut line = format!(
        "read {} (version {}, {})",
        report.read,
        report.version,
        size(t.bytes)
    );
    if t.decoded_segments > 0 {
        line += &format!(
            "; {} segments rebuilt from parity because holders were missing",
            t.decoded_segments
        );
    }
    if !t.unreachable_nodes.is_empty() {
        line += &format!("; {} nodes did not answer", t.unreachable_nodes.len());
    }
    if !t.bad_shards.is_empty() {
        line += &format!(
            "; {} shards failed verification and were not used",
            t.bad_shards.len()
        );
    }
    line
}

fn health_line(file: &FileHealth) -> String {
    if file.unreadable() {
        format!(
            "{}: UNREADABLE now: a segment has only {} of the {} shards it needs reachable",
            file.path, file.healthy_shards_min, file.k
        )
    } else {
        let spare = file.survives_node_losses;
        format!(
            "{} (snapshot {}, {}): {}/{} shards healthy in its weakest segment; survives the loss of any {spare} more node{}",
            file.path,
            file.snapshot,
            size(file.size),
            file.healthy_shards_min,
            file.shards_per_segment,
            if spare == 1 { "" } else { "s" }
        )
    }
}

fn prune_line(r: &cairn_client::session::PruneReport) -> String {
    format!(
        "pruned {} forgotten snapshots: {} segments ({} shards, {}) deleted, {} shards were already gone, {} left to expire; {} segments still in use",
        r.snapshots_pruned,
        r.segments_deleted,
        r.shards_deleted,
        size(r.shard_bytes_freed),
        r.shards_already_gone,
        r.shards_left_to_expire,
        r.segments_kept
    )
}

/// A progress bar on a terminal; nothing otherwise.
struct Bar(indicatif::ProgressBar);

impl Bar {
    fn new() -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(indicatif::ProgressBar::hidden());
        }
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        Self(bar)
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.reset();
        self.0.set_length(total);
        self.0.set_message(what.to_owned());
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

fn site(site: &Option<String>) -> String {
    site.as_ref()
        .map(|s| format!(", site {s}"))
        .unwrap_or_default()
}

fn size(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}

fn when(time: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(time)).to_string()
}

fn parse_time(text: &str) -> anyhow::Result<u64> {
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(seconds);
    }
    let time = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!("--at {text}: give a time like 2026-11-22T10:00:00Z or Unix seconds")
    })?;
    Ok(time.duration_since(UNIX_EPOCH)?.as_secs())
}
