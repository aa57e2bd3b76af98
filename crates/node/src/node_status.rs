//! What the node says about itself: the advert it gossips to the swarm and
//! the status line systemd shows.

use cairn_proto::gossip::Advert;
use cairn_store::{DiskState, DiskStats, ShardStore};

use crate::daemon_config::DaemonConfig;
use crate::net::Server;
use crate::ownership::NodeControl;

/// What this node tells the swarm about itself.
pub fn advert(config: &DaemonConfig, store: &ShardStore, control: &NodeControl) -> Advert {
    let disks = store.disk_stats();
    Advert {
        site: config.swarm.site.clone(),
        capacity: disks.iter().map(|d| d.capacity).sum(),
        free: DiskStats::free_of(&disks),
        software: cairn_net::software(),
        draining: control.ownership().draining,
        reach: Default::default(),
    }
}

/// The one-line status systemd shows for the unit. `cairn-slot gate`
/// reads its `<online>/<known> disks online` to judge a new system slot.
pub fn status_line(store: &ShardStore, server: &Server, control: &NodeControl) -> String {
    let disks = store.disk_stats();
    let online = disks
        .iter()
        .filter(|d| d.state == DiskState::Online)
        .count();
    let shards: u64 = disks.iter().map(|d| d.shards).sum();
    let free = DiskStats::free_of(&disks);
    let ownership = control.ownership();
    format!(
        "{}{}, {shards} shards, {} free, {online}/{} disks online, {} peers",
        control.health().state,
        if ownership.draining {
            ", draining"
        } else if ownership.owner.is_none() {
            ", unclaimed"
        } else {
            ""
        },
        crate::face::human_bytes(free),
        disks.len(),
        server.peers()
    )
}
