//! The command line of `cairn`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The owner's tool: store files in your Cairn swarm and get them back.
#[derive(Parser)]
#[command(name = "cairn", version, about, long_about = None)]
pub struct Cli {
    /// Where the owner's key and settings live (default: $CAIRN_HOME, else ~/.config/cairn).
    #[arg(long, global = true)]
    pub home: Option<PathBuf>,
    /// Print results as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Create your owner identity and show its recovery phrase.
    Init {
        /// Replace an existing identity (its files stay readable only with its phrase).
        #[arg(long)]
        force: bool,
    },
    /// Rebuild your identity from its recovery phrase (read from standard input).
    Recover {
        /// A node that holds your data, as ID@HOST:PORT.
        #[arg(long)]
        node: Vec<String>,
    },
    /// Show your owner id and the key your nodes must allow.
    Id,
    /// Add a node to use: its id (`cairnd --print-id`) and address.
    AddNode {
        /// The node id (cn…).
        id: String,
        /// HOST:PORT.
        addr: String,
        /// Its site (household, region): shards of one segment spread over sites.
        #[arg(long)]
        site: Option<String>,
        /// Make it your steward: it audits your shards, rebuilds lost ones
        /// elsewhere and renews their leases (your own box, ideally).
        #[arg(long)]
        steward: bool,
    },
    /// List your nodes, whether they answer, and their state.
    Nodes,
    /// Find Cairn boxes on this LAN by mDNS.
    Discover {
        /// How long to listen.
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        /// Listen on this interface only (repeatable; default: all but loopback).
        #[arg(long = "interface")]
        interfaces: Vec<String>,
        /// Add the boxes found to your nodes (as `add-node` does).
        #[arg(long)]
        add: bool,
    },
    /// Claim a box whose pairing window is open (hold its button about 5 s
    /// until the LED blips once a second): it becomes yours and is added to
    /// your nodes.
    Claim {
        /// The box's node id (cn…), as its log shows when the window opens.
        id: String,
        /// HOST:PORT.
        addr: String,
        /// Its site (household, region).
        #[arg(long)]
        site: Option<String>,
    },
    /// Hand one of your boxes to another owner (lending it to a neighbour,
    /// say). They give you the transfer card that their `cairn id` shows.
    Transfer {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// The new owner's transfer card (OWNER:CLIENT_KEY).
        #[arg(long)]
        to: String,
    },
    /// Stop one of your boxes taking new shards, so that it can be emptied
    /// before it leaves; `--undo` makes it take shards again.
    Drain {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// Take shards again.
        #[arg(long)]
        undo: bool,
    },
    /// Show or change one of your boxes' settings: its site, the space it
    /// gives, and whom it gives it to. The box keeps them across reboots
    /// (on its writable partition, over /etc/cairn/cairnd.toml).
    Settings {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// Where the box is (a household, a town), shown to the swarm.
        #[arg(long, conflicts_with = "no_site")]
        site: Option<String>,
        /// Advertise no site.
        #[arg(long)]
        no_site: bool,
        /// GiB the box gives in all.
        #[arg(long, conflicts_with = "quota_all")]
        quota_gib: Option<u64>,
        /// Give all free space.
        #[arg(long)]
        quota_all: bool,
        /// Only this owner (hex id, as `cairn usage` shows) may store here;
        /// repeat for more.
        #[arg(long = "donate-to", conflicts_with = "donate_to_any")]
        donate_to: Vec<String>,
        /// Any owner of the swarm may store here.
        #[arg(long)]
        donate_to_any: bool,
        /// MiB each other owner may use here.
        #[arg(long, conflicts_with = "no_share")]
        per_owner_mib: Option<u64>,
        /// No per-owner share (only the box's quota limits others).
        #[arg(long)]
        no_share: bool,
        /// The longest lease a put may ask for, in days.
        #[arg(long)]
        longest_lease_days: Option<u64>,
    },
    /// Print a link to the owner's view of one of your boxes' page (who
    /// uses its space, its settings), signed with your key and valid for a
    /// while. Open it in a browser on the box's network.
    Panel {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// Minutes the link is valid (the box accepts at most its [web]
        /// owner_link_minutes, 60 by default).
        #[arg(long, default_value_t = 15)]
        minutes: u64,
        /// The page's address (default: http://<the box's address>).
        #[arg(long)]
        at: Option<String>,
    },
    /// Have one of your boxes take over the data disks of another box of
    /// yours (the same box before a re-image, or a box whose disks moved to
    /// it). Your steward learns the shards live there now and does not
    /// rebuild them.
    AdoptDisks {
        /// The node id (cn…) of the box the disks are plugged into.
        node: String,
        /// The node whose disks they were (default: each of your other nodes).
        #[arg(long)]
        from: Option<String>,
    },
    /// Update your boxes with a system update bundle (a .raucb that
    /// image/build makes): `cairn update NODE… BUNDLE` or `cairn update
    /// --all BUNDLE`. Each box checks the bundle (its hash here, the
    /// release signature and version itself), installs it into its other
    /// system slot, reboots into it and keeps it only if it comes up
    /// healthy; otherwise it goes back by itself. A transfer cut off
    /// resumes where it stopped when you run this again. With `--from
    /// MEMBER` (a box that has the bundle, such as one updated before),
    /// the boxes fetch it from that member rather than from here.
    Update {
        /// The node ids (cn…) of your boxes, then the bundle file.
        #[arg(required = true, value_name = "NODE… BUNDLE")]
        args: Vec<String>,
        /// Every node in your node list (`cairn nodes`).
        #[arg(long)]
        all: bool,
        /// The bundle's release version (default: from its file name,
        /// cairn-<arch>-<version>.raucb).
        #[arg(long)]
        version: Option<String>,
        /// Let the boxes take this bundle even if it is not newer than
        /// what they run (going back to an older release).
        #[arg(long)]
        allow_downgrade: bool,
        /// A member (node id) that has the bundle whole: each box fetches
        /// it from there, box to box, instead of from this computer.
        #[arg(long, value_name = "MEMBER")]
        from: Option<String>,
        /// With --from, how long to wait for the boxes to have the bundle.
        #[arg(long, default_value_t = 1800, value_name = "SECONDS")]
        wait: u64,
    },
    /// What system your boxes run (release, slot) and how their last
    /// update went; all nodes in your list without NODE.
    System {
        /// Node ids (cn…).
        nodes: Vec<String>,
    },
    /// Who uses the space one of your boxes donates: each owner's shards
    /// and bytes there, largest first.
    Usage {
        /// The node id (cn…), one of your nodes.
        node: String,
    },
    /// Evict an owner from one of your boxes: its shards there go (their
    /// stewards repair them elsewhere) and the box refuses its puts from
    /// then on; `--lift` takes it back.
    Evict {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// The owner id (hex), as `cairn usage` shows it.
        owner: String,
        /// Lift the eviction.
        #[arg(long)]
        lift: bool,
    },
    /// Store files and directories: a new snapshot in which these paths are
    /// as they are now and everything else as before. Unchanged files are
    /// not read again; symbolic links are stored as links, never followed.
    /// Exits 3 when some file could not be read (the rest is stored).
    Put {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Leave out what matches: a pattern without `/` matches a name
        /// anywhere (`*.tmp`, `node_modules`), one with `/` the whole path.
        #[arg(long, value_name = "PATTERN")]
        exclude: Vec<String>,
        /// Leave out the patterns in this file (one per line, # comments).
        #[arg(long, value_name = "FILE")]
        exclude_file: Vec<PathBuf>,
    },
    /// Bring back a directory tree, a file or a link, with modes, mtimes,
    /// links and empty directories, into TARGET/NAME (`/` restores all).
    Restore {
        /// The path as stored (see `cairn ls`).
        path: String,
        /// Where to put it.
        #[arg(long)]
        target: PathBuf,
        /// From the newest snapshot taken at or before this time (RFC 3339,
        /// or Unix seconds).
        #[arg(long, conflicts_with = "snapshot")]
        at: Option<String>,
        /// From this snapshot (its id or a unique start of it).
        #[arg(long)]
        snapshot: Option<String>,
    },
    /// List the snapshots, oldest first.
    Snapshots,
    /// Forget snapshots the rules do not keep (the newest is always kept);
    /// their data is deleted by `cairn prune`.
    Forget {
        /// Keep the newest N snapshots.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_last: usize,
        /// Keep the newest snapshot of each of the newest N days.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_daily: usize,
        /// … of each of the newest N weeks.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_weekly: usize,
        /// … of each of the newest N months.
        #[arg(long, default_value_t = 0, value_name = "N")]
        keep_monthly: usize,
        /// Prune right after.
        #[arg(long)]
        prune: bool,
    },
    /// Delete the data that only forgotten snapshots used, at the nodes that
    /// hold it, so that their space comes back.
    Prune,
    /// Read a file back.
    Get {
        /// The path as stored (see `cairn ls`).
        path: String,
        /// Where to write it (default: standard output).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// The version current at this time (RFC 3339, or Unix seconds).
        #[arg(long, conflicts_with = "version")]
        at: Option<String>,
        /// This version number.
        #[arg(long)]
        version: Option<u32>,
    },
    /// List the files and links of the newest snapshot.
    Ls {
        /// Only this file or what is below this directory.
        prefix: Option<String>,
    },
    /// List the versions of a file.
    Versions {
        /// The path as stored.
        path: String,
    },
    /// Leave a file or directory out of a new snapshot (earlier snapshots
    /// keep it: it stays readable by --version or --at until they are
    /// forgotten and pruned).
    Rm {
        /// The path as stored.
        path: String,
    },
    /// Check that the shards of files are held, and which losses they survive.
    Status {
        /// Only this file or what is below this directory.
        prefix: Option<String>,
    },
    /// Found a swarm, invite to it, accept an invite, remove a member.
    #[command(subcommand)]
    Swarm(SwarmCommand),
    /// The swarm's members as gossip knows them (asked of your first node
    /// that answers, or of `--node`): up or down, site, space, software,
    /// the router each is behind and how the node asked reaches it.
    Members {
        /// Ask this node of yours (cn…) instead.
        #[arg(long)]
        node: Option<String>,
    },
    /// Make one of your nodes join your swarm with its invite ticket.
    Join {
        /// The node id (cn…), one of your nodes.
        node: String,
        /// The node's invite ticket (cairn-invite:…), from the swarm's founder.
        #[arg(long)]
        invite: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum SwarmCommand {
    /// Found a swarm: your owner key becomes its authority, its public key
    /// the swarm id; your client becomes its first member.
    Create,
    /// Invite a node (its node id) or another owner (their client key,
    /// with --client) into your swarm: prints the ticket to hand over.
    Invite {
        /// The node id or client key (cn…).
        key: String,
        /// Invite an owner's client, not a node.
        #[arg(long)]
        client: bool,
        /// Days the membership lasts (renew by inviting again).
        #[arg(long, default_value_t = 365)]
        days: u64,
    },
    /// Accept an invite for your client (from a swarm's founder).
    Accept {
        /// The ticket (cairn-invite:…).
        ticket: String,
    },
    /// Remove a member (node id or client key) from your swarm: every node
    /// you know is told, and refuses it from then on.
    Remove {
        /// The member's key (cn…).
        key: String,
    },
}
