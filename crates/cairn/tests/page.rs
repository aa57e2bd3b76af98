//! The box's page and `/metrics` from a real `cairnd`, over real HTTP on
//! loopback, and its settings changed from `cairn` and from the page:
//!
//! - the health view is anyone's; `/metrics` carries the store's figures;
//! - the owner's view refuses a missing, forged, expired or too long-lived
//!   link, and opens with the link `cairn panel` prints;
//! - `cairn settings` changes the site and the quota, the node restarts its
//!   services with them, and they are in `settings.toml`; the page's form
//!   changes them too.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use cairn_net::identity::Identity;
use cairn_proto::signed::PanelLink;
use common::daemon::Daemon;
use common::owner::{Owner, ok};

/// One HTTP/1.1 exchange: the status code and the body.
fn http(at: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    page_up(at);
    let mut stream = TcpStream::connect(at).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: box\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Waits until the page answers (after a start or a restart of the
/// node's services), bounded.
fn page_up(at: SocketAddr) {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(at).is_err() {
        assert!(Instant::now() < until, "the page never came up at {at}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_page_metrics_owner_view_and_settings_that_stick() {
    let alice = Owner::new();
    alice.json(&["init"]);
    let client = Identity::from_private(alice.secret().client_key()).id;
    let owned = alice.ownership_toml();
    let web = free_port();
    let daemon = Daemon::start_with_files(
        &[client],
        &[],
        &format!("[web]\nlisten = '{web}'\nowner_link_minutes = 30\n"),
        &[("state/ownership.toml", owned)],
    );
    let node = daemon.id.to_human();
    ok(alice.run(&["add-node", &node, &daemon.addr.to_string()], None));
    page_up(web);

    // The health view, anyone's.
    let (status, page) = http(web, "GET", "/", "");
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(r#"id="state-name""#) && page.contains(r#"id="disks""#),
        "{page}"
    );
    assert!(page.contains(&node), "the page names the node");
    assert!(
        !page.contains(r#"id="usage""#),
        "no owner's view without a link"
    );

    // /metrics agrees with what the node tells its owner.
    let nodes = alice.json(&["nodes"]);
    let (status, metrics) = http(web, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let row = nodes.iter().find(|n| n["id"] == node.as_str()).unwrap();
    let figure = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
            .parse()
            .unwrap()
    };
    assert_eq!(
        figure("cairn_store_shards"),
        row["shards"].as_u64().unwrap()
    );
    assert_eq!(
        figure("cairn_store_used_bytes"),
        row["used"].as_u64().unwrap()
    );
    assert!(
        metrics.contains(r#"cairn_requests_total{kind="stat"}"#),
        "{metrics}"
    );

    // The owner's view refuses what its owner did not sign, now, for this box.
    let (status, refused) = http(web, "GET", "/owner", "");
    assert_eq!(status, 403);
    assert!(refused.contains("cairn panel"), "{refused}");
    let mallory = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let now = cairn_host::unix_now();
    let forged = PanelLink::sign(&mallory, &daemon.id, now + 600);
    let (status, refused) = http(web, "GET", &format!("/owner?{}", forged.to_query()), "");
    assert_eq!(status, 403);
    assert!(refused.contains("not signed by this box"), "{refused}");
    let alices = alice.secret().keys().signing;
    let expired = PanelLink::sign(&alices, &daemon.id, now - 10);
    let (status, refused) = http(web, "GET", &format!("/owner?{}", expired.to_query()), "");
    assert_eq!(status, 403);
    assert!(refused.contains("expired"), "{refused}");
    let too_long = PanelLink::sign(&alices, &daemon.id, now + 3 * 3600);
    let (status, _) = http(web, "GET", &format!("/owner?{}", too_long.to_query()), "");
    assert_eq!(status, 403, "a link longer than [web] owner_link_minutes");
    let mut tampered = PanelLink::sign(&alices, &daemon.id, now + 600);
    tampered.not_after += 1;
    let (status, _) = http(web, "GET", &format!("/owner?{}", tampered.to_query()), "");
    assert_eq!(status, 403, "a link whose time was changed");

    // The link `cairn panel` prints opens it.
    let link = ok(alice.run(&["panel", &node, "--at", &format!("http://{web}")], None));
    let path = link
        .lines()
        .next()
        .unwrap()
        .strip_prefix(&format!("http://{web}"))
        .unwrap()
        .to_owned();
    let (status, owner_view) = http(web, "GET", &path, "");
    assert_eq!(status, 200, "{owner_view}");
    assert!(owner_view.contains(r#"id="settings""#), "{owner_view}");

    // Settings from `cairn`: kept, and in force after the services restart.
    let changed = alice.json(&["settings", &node, "--site", "cellar", "--quota-gib", "3"]);
    assert_eq!(changed[0]["site"], "cellar");
    assert_eq!(changed[0]["restarting"], true);
    let kept = std::fs::read_to_string(daemon.dir().join("state/settings.toml")).unwrap();
    assert!(
        kept.contains("site = \"cellar\"") && kept.contains("quota_gib = 3"),
        "{kept}"
    );
    let restarted = Instant::now() + Duration::from_secs(30);
    while !daemon
        .log()
        .contains("starting again with the owner's new settings")
    {
        assert!(Instant::now() < restarted, "no restart: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    // systemd hears a reload and then READY=1, never STOPPING=1: that
    // would make it kill the node once TimeoutStopSec had run out.
    let mut told = Vec::new();
    while !told.last().is_some_and(|n: &String| n.contains("READY=1")) {
        told.push(daemon.next_notification());
    }
    assert!(
        told.iter().any(|n| n.contains("RELOADING=1")),
        "no RELOADING=1 before READY=1: {told:?}"
    );
    assert!(
        !told.iter().any(|n| n.contains("STOPPING=1")),
        "the settings restart told systemd it stops: {told:?}"
    );
    page_up(web);
    let read = alice.json(&["settings", &node]);
    assert_eq!(read[0]["site"], "cellar");
    assert_eq!(read[0]["quota_gib"], 3);
    assert_eq!(read[0]["restarting"], false, "a read changes nothing");
    // A bad value is refused with its key, and nothing changes.
    let refused = alice.run(&["settings", &node, "--longest-lease-days", "0"], None);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("longest_lease_days"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    // Settings from the page's form, with the link in it.
    let query = path.split_once('?').unwrap().1;
    let form = format!(
        "link={}&site=attic&quota_gib=&per_owner_mib=256&longest_lease_days=90&owners=",
        query.replace('&', "%26").replace('=', "%3D")
    );
    let (status, _) = http(web, "POST", "/owner/settings", &form);
    assert_eq!(status, 303);
    // The node restarts its services with them: a request made meanwhile
    // would meet the page going away, so the next one waits for it.
    let restarted = Instant::now() + Duration::from_secs(30);
    while daemon
        .log()
        .matches("starting again with the owner's new settings")
        .count()
        < 2
    {
        assert!(Instant::now() < restarted, "no restart: {}", daemon.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let (status, _) = http(
        web,
        "POST",
        "/owner/settings",
        "link=until%3D1%26sig%3D00&site=x",
    );
    assert_eq!(status, 403, "a form without a valid link changes nothing");
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        page_up(web);
        let read = alice.json(&["settings", &node]);
        if read[0]["site"] == "attic" {
            assert_eq!(
                read[0]["quota_gib"],
                serde_json::Value::Null,
                "emptied: all free space"
            );
            assert_eq!(read[0]["per_owner_mib"], 256);
            assert_eq!(read[0]["longest_lease_days"], 90);
            break;
        }
        assert!(
            Instant::now() < until,
            "the form's settings never took: {read:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    daemon.stop();
}
