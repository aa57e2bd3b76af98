//! The box's page: plain HTML and CSS, no script, nothing fetched from
//! outside the box, readable on a phone. The health view is anyone's on
//! the LAN; the owner's view (who uses the space, the settings) opens only
//! with a link the owner signed. maud escapes every string, and the page
//! shows strangers' words (members' sites).

use maud::{DOCTYPE, Markup, PreEscaped, html};

use super::{Snapshot, human_bytes, led_meaning};
use cairn_proto::SettingsInfo;

/// Seconds between the health view's own refreshes.
pub const REFRESH_S: u32 = 10;

/// One owner's use of this box, for the owner's view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRow {
    /// The owner (hex).
    pub owner: String,
    /// Whether it is the box's own owner.
    pub box_owner: bool,
    /// Bytes of its shards here.
    pub bytes: u64,
    /// Its shards here.
    pub shards: u64,
    /// Whether the box's owner evicted it.
    pub evicted: bool,
}

/// What only the owner sees.
#[derive(Debug, Clone)]
pub struct OwnerView {
    /// Each owner's use, largest first.
    pub usage: Vec<UsageRow>,
    /// The settings in force.
    pub settings: SettingsInfo,
    /// The signed link's query, carried to the next page and the form.
    pub query: String,
    /// What the last action did, or why it was refused.
    pub notice: Option<String>,
}

const STYLE: &str = r#"
:root { color-scheme: light dark; --ok: #2e7d32; --warn: #b26a00; --bad: #c62828; --muted: #777; --card: rgba(127,127,127,.08); }
* { box-sizing: border-box; }
body { font: 16px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 46rem; padding: 1rem; }
h1 { font-size: 1.4rem; margin: .2rem 0 .8rem; }
h2 { font-size: 1.1rem; margin: 1.6rem 0 .5rem; }
.id { font-family: ui-monospace, monospace; font-size: .8rem; color: var(--muted); word-break: break-all; }
.state { border-radius: .6rem; padding: .8rem 1rem; background: var(--card); border-left: .5rem solid var(--muted); }
.state.healthy { border-color: var(--ok); } .state.degraded, .state.repairing, .state.booting { border-color: var(--warn); } .state.error { border-color: var(--bad); }
.state strong { font-size: 1.3rem; text-transform: capitalize; }
.cards { display: grid; gap: .6rem; grid-template-columns: repeat(auto-fill, minmax(16rem, 1fr)); }
.card { background: var(--card); border-radius: .6rem; padding: .7rem .9rem; }
.card h3 { font-size: 1rem; margin: 0 0 .3rem; word-break: break-all; }
.tag { display: inline-block; border-radius: 1rem; padding: 0 .55rem; font-size: .85rem; color: #fff; background: var(--muted); }
.tag.online, .tag.up { background: var(--ok); } .tag.offline, .tag.refused { background: var(--warn); } .tag.failed, .tag.down { background: var(--bad); }
.bar { height: .5rem; background: rgba(127,127,127,.25); border-radius: .25rem; overflow: hidden; margin: .35rem 0; }
.bar span { display: block; height: 100%; background: var(--ok); }
.muted, small { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .8rem; margin: 0; }
dt { color: var(--muted); } dd { margin: 0; }
table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3rem .4rem; border-bottom: 1px solid rgba(127,127,127,.25); }
td.num, th.num { text-align: right; }
form label { display: block; margin: .6rem 0 .2rem; font-weight: 600; }
input, textarea { font: inherit; width: 100%; padding: .4rem; }
button { font: inherit; margin-top: .8rem; padding: .5rem 1.2rem; }
.notice { background: var(--card); border-left: .4rem solid var(--warn); padding: .5rem .8rem; }
"#;

fn frame(title: &str, refresh: Option<u32>, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(seconds) = refresh {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) }
                style { (PreEscaped(STYLE)) }
            }
            body { (body) }
        }
    }
    .into_string()
}

fn share(used: u64, of: u64) -> u64 {
    used.saturating_mul(100)
        .checked_div(of)
        .map_or(0, |percent| percent.min(100))
}

/// How an update ended, in words.
fn update_words(result: &str) -> &'static str {
    match result {
        "kept" => "installed and kept",
        "rolled-back" => "rolled back (the box went back to the release before)",
        "interrupted" => "interrupted; nothing changed",
        "refused" => "refused; nothing changed",
        _ => "ended",
    }
}

/// The health view (anyone on the LAN), with the owner's view below it
/// when `owner` is given.
pub fn render(snapshot: &Snapshot, owner: Option<&OwnerView>) -> String {
    let total_capacity: u64 = snapshot.disks.iter().map(|d| d.capacity).sum();
    let total_used: u64 = snapshot.disks.iter().map(|d| d.used).sum();
    let total_free: u64 = snapshot.disks.iter().map(|d| d.free).sum();
    let total_shards: u64 = snapshot.disks.iter().map(|d| d.shards).sum();
    let up = snapshot.members.iter().filter(|m| m.up).count();
    let site = snapshot.settings.as_ref().and_then(|s| s.site.clone());
    let body = html! {
        h1 { "Cairn box" @if let Some(site) = &site { " · " (site) } }
        p.id { "node " (snapshot.node) " · " (snapshot.software) " · up " (uptime(snapshot.uptime_s)) }
        @if let Some(owner) = owner { @if let Some(notice) = &owner.notice { p.notice #notice { (notice) } } }
        section.state.(snapshot.state) #state {
            strong #state-name { (snapshot.state) }
            @if snapshot.draining { " · draining" }
            @if !snapshot.claimed { " · not claimed yet" }
            @if snapshot.pairing { " · pairing window open" }
            p { "The light " (led_meaning(&snapshot.state)) "." }
            @if !snapshot.reasons.is_empty() {
                ul #reasons { @for reason in &snapshot.reasons { li { (reason) } } }
            }
            dl {
                dt { "Space" } dd #space { (human_bytes(total_free)) " free of " (human_bytes(total_capacity)) ", " (human_bytes(total_used)) " in " (total_shards) " shards" }
                dt { "Temperature" } dd #temperature {
                    @match snapshot.temperature_mc {
                        Some(mc) => { (format!("{:.1} °C", f64::from(mc) / 1000.0)) }
                        None => span.muted { "no sensor" }
                    }
                }
                dt { "Power" } dd #power {
                    @match &snapshot.power {
                        Some(p) if p.undervoltage => { "too weak now: use a stronger power supply" }
                        Some(p) if p.undervoltage_since_boot => { "dipped since boot: check the power supply" }
                        Some(p) if p.throttled => { "throttled" }
                        Some(_) => { "good" }
                        None => span.muted { "not reported by this board" }
                    }
                }
                dt { "Peers" } dd { (snapshot.peers) " connected" }
                @if let Some(system) = &snapshot.system {
                    dt { "System" } dd #system {
                        "Cairn " (system.version)
                        @if let Some(slot) = &system.slot { " (slot " (slot.to_uppercase()) ")" }
                        @if system.installing { " · installing an update, then rebooting into it" }
                        @else if let Some((bundle, have)) = &system.receiving {
                            " · receiving update " (bundle.version) ": " (share(*have, bundle.size)) "%"
                        }
                    }
                }
            }
            @if let Some(last) = snapshot.system.as_ref().and_then(|s| s.last.as_ref()) {
                p #update.(last.result) {
                    "Last update, to " (last.version) ": " (update_words(&last.result)) ". " (last.reason)
                }
            }
        }
        h2 { "Disks" }
        @if snapshot.disks.is_empty() {
            p.muted #no-disks { "No data disk yet. Plug in a USB disk labelled CAIRN…, or let the first boot make one." }
        }
        div.cards #disks {
            @for disk in &snapshot.disks {
                article.card.disk data-state=(disk.state) {
                    h3 { (disk.path) " " span.tag.(disk.state) { (disk.state) } }
                    div.bar { span style=(format!("width:{}%", share(disk.used, disk.capacity))) {} }
                    small { (human_bytes(disk.used)) " used, " (human_bytes(disk.free)) " free of " (human_bytes(disk.capacity)) " · " (disk.shards) " shards" }
                    @if let Some(problem) = &disk.problem { p { (problem) } }
                    p { (disk.advice()) }
                }
            }
        }
        h2 { "Repairs" }
        @match &snapshot.steward {
            Some(s) => {
                p #repairs {
                    @if s.repairing { "Rebuilding or moving shards now. " } @else { "No repair running. " }
                    (s.repairs_queued) " segments wait for repair; " (s.segments) " segments watched. Since start: "
                    (s.audits_passed) " audits passed, " (s.audits_failed) " failed, " (s.shards_rebuilt) " shards rebuilt, "
                    (s.shards_moved) " moved."
                }
            }
            None => p.muted #repairs { "This box does not steward anyone's data." }
        }
        h2 { "Swarm" }
        @if snapshot.members.is_empty() {
            p.muted #no-members { "Not in a swarm yet, or no other member heard." }
        } @else {
            p { (up) " of " (snapshot.members.len()) " members up." }
            table #members {
                thead { tr { th { "Member" } th { "Site" } th { "State" } th { "Reached" } th.num { "Free" } } }
                tbody {
                    @for member in &snapshot.members {
                        tr {
                            td.id { (member.node.get(..12).unwrap_or(&member.node)) "…" }
                            td { (member.site.as_deref().unwrap_or("—")) }
                            td { @if member.up { span.tag.up { "up" } } @else { span.tag.down { "down" } } }
                            td { (member.path) }
                            td.num { (human_bytes(member.free)) }
                        }
                    }
                }
            }
        }
        @match owner {
            Some(owner) => { (owner_section(owner)) }
            None => {
                p.muted { small { "The box's owner sees who uses its space and changes its settings with the link " code { "cairn panel NODE" } " prints." } }
            }
        }
        p.muted { small { "Refreshes itself every " (REFRESH_S) " s. Figures for tools: " a href="/metrics" { "/metrics" } "." } }
    };
    frame(
        &format!("Cairn · {}", snapshot.state),
        // The owner's view holds a form: a refresh would lose what is typed.
        owner.is_none().then_some(REFRESH_S),
        body,
    )
}

fn owner_section(owner: &OwnerView) -> Markup {
    let s = &owner.settings;
    html! {
        h2 { "Who uses this box" }
        @if owner.usage.is_empty() {
            p.muted #usage { "Nobody stores anything here yet." }
        } @else {
            table #usage {
                thead { tr { th { "Owner" } th.num { "Space" } th.num { "Shards" } } }
                tbody {
                    @for row in &owner.usage {
                        tr {
                            td.id { (row.owner.get(..16).unwrap_or(&row.owner)) "…"
                                @if row.box_owner { " (you)" }
                                @if row.evicted { " (evicted)" } }
                            td.num { (human_bytes(row.bytes)) }
                            td.num { (row.shards) }
                        }
                    }
                }
            }
        }
        h2 { "Settings" }
        form #settings method="post" action="/owner/settings" {
            input type="hidden" name="link" value=(owner.query);
            label for="site" { "Site (where this box is, shown to the swarm)" }
            input #site name="site" value=(s.site.as_deref().unwrap_or("")) maxlength="64";
            label for="quota_gib" { "Space given, GiB (empty: all free space)" }
            input #quota_gib name="quota_gib" inputmode="numeric" value=(s.quota_gib.map(|q| q.to_string()).unwrap_or_default());
            label for="per_owner_mib" { "Each other owner's share, MiB (empty: no share)" }
            input #per_owner_mib name="per_owner_mib" inputmode="numeric" value=(s.per_owner_mib.map(|q| q.to_string()).unwrap_or_default());
            label for="longest_lease_days" { "Longest lease, days" }
            input #longest_lease_days name="longest_lease_days" inputmode="numeric" value=(s.longest_lease_days);
            label for="owners" { "Only these owners may store here (owner ids, one per line; empty: any owner of the swarm)" }
            textarea #owners name="owners" rows="3" {
                @for o in &s.donation_owners { (o.to_hex()) "\n" }
            }
            button type="submit" { "Save" }
            p.muted { small { "Saving restarts the node's services for a moment to take the change. Settings are kept on the box and survive reboots." } }
        }
    }
}

/// The page for an owner's link that is refused: why, and what to do.
pub fn refused(reason: &str) -> String {
    frame(
        "Cairn · owner's view refused",
        None,
        html! {
            h1 { "Owner's view refused" }
            p.notice #refused { (reason) }
            p { a href="/" { "The box's health" } " is open to anyone on this network." }
        },
    )
}

fn uptime(seconds: u64) -> String {
    match seconds {
        s if s < 3600 => format!("{} min", s / 60),
        s if s < 86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        s => format!("{} days", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::{DiskRow, MemberRow};

    fn snapshot() -> Snapshot {
        Snapshot {
            node: "cnabcdefghijklmnop".into(),
            software: "cairn 0.1.0".into(),
            state: "degraded".into(),
            reasons: vec!["disk /srv/cairn/disks/a failed".into()],
            claimed: true,
            disks: vec![DiskRow {
                path: "/srv/cairn/disks/a".into(),
                state: "failed",
                problem: Some("I/O error".into()),
                capacity: 1 << 30,
                used: 1 << 20,
                free: 0,
                shards: 3,
                quarantined: 0,
            }],
            members: vec![MemberRow {
                node: "cnzyxwvutsrqponm".into(),
                site: Some("<script>alert(1)</script>".into()),
                up: false,
                path: "relayed",
                free: 5 << 30,
                capacity: 6 << 30,
            }],
            ..Snapshot::default()
        }
    }

    #[test]
    fn the_page_says_the_state_each_disk_and_what_to_do() {
        let page = render(&snapshot(), None);
        assert!(page.contains(r#"id="state-name">degraded<"#), "{page}");
        assert!(page.contains("flashes twice"));
        assert!(page.contains(r#"data-state="failed""#));
        assert!(page.contains("unplug it and plug it back in"));
        assert!(page.contains("1.0 MiB used"));
        assert!(page.contains(r#"http-equiv="refresh""#));
        assert!(
            !page.contains("<script"),
            "no script, and none from a member"
        );
        assert!(
            page.contains("&lt;script&gt;"),
            "a member's site is escaped"
        );
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "nothing from outside the box"
        );
        assert!(
            !page.contains(r#"id="usage""#),
            "no owner's view without a link"
        );
    }

    #[test]
    fn the_owner_view_shows_use_and_settings_and_carries_the_link() {
        let view = OwnerView {
            usage: vec![UsageRow {
                owner: "ab".repeat(32),
                box_owner: true,
                bytes: 3 << 20,
                shards: 7,
                evicted: false,
            }],
            settings: SettingsInfo {
                site: Some("attic".into()),
                quota_gib: Some(500),
                donation_owners: vec![],
                per_owner_mib: None,
                longest_lease_days: 400,
                restarting: false,
            },
            query: "until=5&sig=00".into(),
            notice: None,
        };
        let page = render(&snapshot(), Some(&view));
        assert!(page.contains(r#"id="usage""#) && page.contains("(you)"));
        assert!(
            page.contains(r#"name="link" value="until=5&amp;sig=00""#),
            "{page}"
        );
        assert!(page.contains(r#"value="500""#) && page.contains(r#"value="attic""#));
    }
}
