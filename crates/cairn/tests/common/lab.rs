//! A lab of homes on one machine, in network namespaces with no link to
//! the host: an "internet" bridge at 11.77.0.0/24 (a range that is not
//! reserved, as miniupnpd insists, and never leaves the lab) and
//! 2001:db8:77::/64 (IPv6's documentation range), public members on it,
//! and homes each behind a router namespace doing what home routers do
//! with nftables. Homes with IPv6 get a routed /64 of their own
//! (2001:db8:1NN::/64) behind a firewall that drops what nobody inside
//! asked for. Deleted when dropped.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::daemon::Daemon;
use super::owner::Owner;

/// What stands between a home and the internet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Router {
    /// A public address on the internet bridge, no router.
    Public,
    /// A typical home router: masquerade (it keeps the source port when
    /// it can) and drops unsolicited inbound.
    Home,
    /// A router that picks a new port per destination (`masquerade
    /// random`).
    Symmetric,
    /// A home router behind the provider's carrier-grade NAT (100.64/10),
    /// each a typical NAT.
    Carrier,
    /// A home router that drops every UDP packet to or from the internet.
    UdpBlocked,
    /// A typical home router running miniupnpd (UPnP-IGD, NAT-PMP, PCP):
    /// it maps the ports its LAN asks for.
    Upnp,
    /// The same with UPnP-IGD alone (no NAT-PMP or PCP), as many routers
    /// ship.
    UpnpOnly,
    /// A router whose miniupnpd accepts mappings that its firewall never
    /// makes: the port-mapping protocol says yes, nothing gets in.
    LyingUpnp,
    /// A typical home router for IPv4, and IPv6 routed to the home behind
    /// a stateful firewall (what a fibre or cable provider gives).
    DualHome,
    /// A symmetric NAT for IPv4 (where IPv4 can only relay), and IPv6
    /// behind a stateful firewall.
    DualSymmetric,
}

impl Router {
    /// Whether the place has IPv6.
    pub fn ipv6(self) -> bool {
        matches!(self, Self::Public | Self::DualHome | Self::DualSymmetric)
    }

    /// What its IPv4 side does, as one of the IPv4-only kinds.
    fn ipv4(self) -> Self {
        match self {
            Self::DualHome => Self::Home,
            Self::UpnpOnly => Self::Upnp,
            Self::DualSymmetric => Self::Symmetric,
            other => other,
        }
    }
}

/// One place in the lab: a namespace where a box runs.
#[derive(Debug, Clone)]
pub struct Site {
    /// A short name (`pub1`, `home2`, …).
    pub name: String,
    /// What is in front of it.
    pub router: Router,
    /// The box's namespace.
    pub netns: String,
    /// The box's address in its namespace.
    pub ip: IpAddr,
    /// The router's namespace facing the internet (the carrier's, for
    /// carrier-grade NAT), if any.
    pub wan_netns: Option<String>,
    /// The router's address on the internet, if any.
    pub wan_ip: Option<IpAddr>,
}

/// The lab; its namespaces are deleted when it is dropped.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// Daemons of the lab's routers (miniupnpd), stopped first on drop.
    daemons: Vec<std::process::Child>,
    /// Their configuration files and logs.
    scratch: tempfile::TempDir,
    /// The places, in the order given.
    pub sites: Vec<Site>,
}

/// Runs a command, its error naming the command and its standard error.
pub fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn parse_ip(text: &str) -> Result<IpAddr, String> {
    text.parse().map_err(|e| format!("{text}: {e}"))
}

/// Runs `nft -f -` in `netns` with `rules`.
fn nft(netns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft in {netns}: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A router's rules: NAT out of `wan`, unsolicited inbound dropped (at
/// the router itself too: without that, even two plain NATs cannot
/// punch, see TOOLCHAIN.md), and for `UdpBlocked` no UDP at all. A router
/// with miniupnpd has the chains it fills (in one table, as its
/// `nft_init.sh` makes them); the lying one never jumps to its port
/// forwards.
fn router_rules(router: Router) -> String {
    if matches!(router, Router::Upnp | Router::UpnpOnly | Router::LyingUpnp) {
        let forwards = if router != Router::LyingUpnp {
            "jump prerouting_miniupnpd"
        } else {
            ""
        };
        return format!(
            "table inet filter {{
  chain input {{ type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    jump miniupnpd
    iifname \"wan\" ct state new drop
  }}
  chain miniupnpd {{ }}
  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;
    {forwards}
  }}
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
    oifname \"wan\" masquerade
  }}
  chain prerouting_miniupnpd {{ }}
  chain postrouting_miniupnpd {{ }}
}}
"
        );
    }
    let masquerade = if router.ipv4() == Router::Symmetric {
        "masquerade random"
    } else {
        "masquerade"
    };
    let block = if router == Router::UdpBlocked {
        "meta l4proto udp drop"
    } else {
        ""
    };
    // Neighbour discovery (IPv6's ARP) must reach the router.
    let icmpv6 = if router.ipv6() {
        "meta l4proto ipv6-icmp accept"
    } else {
        ""
    };
    format!(
        "table ip nat {{
  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
}}
table inet filter {{
  chain input {{ type filter hook input priority filter; policy accept;
    {icmpv6}
    iifname \"wan\" ct state new drop
  }}
  chain forward {{ type filter hook forward priority filter; policy accept;
    {block}
    iifname \"wan\" ct state new drop
  }}
}}
"
    )
}

impl Lab {
    /// Builds the lab with these places; an error says which step failed.
    pub fn build(places: &[(&str, Router)]) -> Result<Self, String> {
        let prefix = format!("cl{}", std::process::id() % 100_000);
        let mut lab = Self {
            prefix,
            namespaces: Vec::new(),
            daemons: Vec::new(),
            scratch: tempfile::tempdir().map_err(|e| e.to_string())?,
            sites: Vec::new(),
        };
        let inet = lab.netns("inet")?;
        run("ip", &["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        run("ip", &["-n", &inet, "link", "set", "br0", "up"])?;
        let (mut public_n, mut home_n) = (1u8, 1u8);
        // Each home's IPv6 prefix, its router's address on the internet,
        // and the router's namespace.
        let mut v6_routes: Vec<(String, String, String)> = Vec::new();
        for (name, router) in places {
            let site = match router {
                Router::Public => {
                    let ip = format!("11.77.0.{}", 1 + public_n);
                    public_n += 1;
                    let ns = lab.netns(name)?;
                    lab.wire(&inet, &format!("v{name}"), &ns, "eth0", true)?;
                    lab.address(&ns, "eth0", &format!("{ip}/24"))?;
                    lab.address(&ns, "eth0", &format!("2001:db8:77::{}/64", public_n))?;
                    Site {
                        name: (*name).to_owned(),
                        router: *router,
                        netns: ns,
                        ip: parse_ip(&ip)?,
                        wan_netns: None,
                        wan_ip: None,
                    }
                }
                _ => {
                    let i = home_n;
                    home_n += 1;
                    let wan_ip = format!("11.77.0.{}", 20 + i);
                    let home = lab.netns(name)?;
                    let gw = lab.netns(&format!("{name}-gw"))?;
                    lab.wire(&gw, "lan", &home, "eth0", false)?;
                    lab.address(&gw, "lan", &format!("192.168.{i}.1/24"))?;
                    lab.address(&home, "eth0", &format!("192.168.{i}.10/24"))?;
                    run(
                        "ip",
                        &[
                            "-n",
                            &home,
                            "route",
                            "add",
                            "default",
                            "via",
                            &format!("192.168.{i}.1"),
                        ],
                    )?;
                    let wan_netns = if *router == Router::Carrier {
                        // The provider's NAT between the home router and the internet.
                        let carrier = lab.netns(&format!("{name}-cgn"))?;
                        lab.wire(&carrier, "lan", &gw, "wan", false)?;
                        lab.address(&carrier, "lan", &format!("100.64.{i}.1/24"))?;
                        lab.address(&gw, "wan", &format!("100.64.{i}.2/24"))?;
                        run(
                            "ip",
                            &[
                                "-n",
                                &gw,
                                "route",
                                "add",
                                "default",
                                "via",
                                &format!("100.64.{i}.1"),
                            ],
                        )?;
                        lab.wire(&inet, &format!("v{name}"), &carrier, "wan", true)?;
                        lab.address(&carrier, "wan", &format!("{wan_ip}/24"))?;
                        lab.router(&carrier, Router::Home)?;
                        lab.router(&gw, Router::Home)?;
                        carrier
                    } else {
                        lab.wire(&inet, &format!("v{name}"), &gw, "wan", true)?;
                        lab.address(&gw, "wan", &format!("{wan_ip}/24"))?;
                        lab.router(&gw, *router)?;
                        if matches!(router, Router::Upnp | Router::UpnpOnly | Router::LyingUpnp) {
                            lab.miniupnpd(&gw, i, *router != Router::UpnpOnly)?;
                        }
                        if router.ipv6() {
                            // The provider routes the home a /64 of its own.
                            lab.address(&gw, "wan", &format!("2001:db8:77::{}/64", 20 + i))?;
                            lab.address(
                                &gw,
                                "lan",
                                &format!("2001:db8:{}::1/64", 100 + u16::from(i)),
                            )?;
                            lab.address(
                                &home,
                                "eth0",
                                &format!("2001:db8:{}::10/64", 100 + u16::from(i)),
                            )?;
                            run(
                                "ip",
                                &[
                                    "-n",
                                    &home,
                                    "-6",
                                    "route",
                                    "add",
                                    "default",
                                    "via",
                                    &format!("2001:db8:{}::1", 100 + u16::from(i)),
                                ],
                            )?;
                            run(
                                "ip",
                                &[
                                    "netns",
                                    "exec",
                                    &gw,
                                    "sysctl",
                                    "-qw",
                                    "net.ipv6.conf.all.forwarding=1",
                                ],
                            )?;
                            v6_routes.push((
                                format!("2001:db8:{}::/64", 100 + u16::from(i)),
                                format!("2001:db8:77::{}", 20 + i),
                                gw.clone(),
                            ));
                        }
                        gw
                    };
                    Site {
                        name: (*name).to_owned(),
                        router: *router,
                        netns: home,
                        ip: parse_ip(&format!("192.168.{i}.10"))?,
                        wan_netns: Some(wan_netns),
                        wan_ip: Some(parse_ip(&wan_ip)?),
                    }
                }
            };
            lab.sites.push(site);
        }
        // The internet's routes to the homes' IPv6 prefixes, for everyone
        // with IPv6 on it.
        let on_the_internet: Vec<String> = lab
            .sites
            .iter()
            .filter(|s| s.router == Router::Public)
            .map(|s| s.netns.clone())
            .chain(v6_routes.iter().map(|(_, _, gw)| gw.clone()))
            .collect();
        for (prefix, via, gw) in &v6_routes {
            for ns in on_the_internet.iter().filter(|ns| *ns != gw) {
                run("ip", &["-n", ns, "-6", "route", "add", prefix, "via", via])?;
            }
        }
        Ok(lab)
    }

    /// The place called `name`.
    pub fn site(&self, name: &str) -> &Site {
        self.sites
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no place {name} in the lab"))
    }

    /// The internet's namespace (its bridge is `br0`).
    pub fn internet(&self) -> String {
        format!("{}-inet", self.prefix)
    }

    /// Gives a home's router (or its carrier) a new address on the
    /// internet, as a provider does, and forgets its NAT state.
    pub fn renumber(&mut self, name: &str, new_ip: &str) -> Result<(), String> {
        let site = self.site(name).clone();
        let (wan_netns, old) = (site.wan_netns.unwrap(), site.wan_ip.unwrap());
        run(
            "ip",
            &[
                "-n",
                &wan_netns,
                "addr",
                "del",
                &format!("{old}/24"),
                "dev",
                "wan",
            ],
        )?;
        self.address(&wan_netns, "wan", &format!("{new_ip}/24"))?;
        self.flush_conntrack(name)?;
        let site = self.sites.iter_mut().find(|s| s.name == name).unwrap();
        site.wan_ip = Some(parse_ip(new_ip)?);
        Ok(())
    }

    /// Forgets every connection a home's routers track (a router reboot,
    /// a conntrack table overflow).
    pub fn flush_conntrack(&self, name: &str) -> Result<(), String> {
        let site = self.site(name);
        for ns in self.routers_of(site) {
            // conntrack -F exits 1 when the table was already empty.
            let _ = run("ip", &["netns", "exec", &ns, "conntrack", "-F"]);
        }
        Ok(())
    }

    fn routers_of(&self, site: &Site) -> Vec<String> {
        let mut all = vec![format!("{}-{}-gw", self.prefix, site.name)];
        if site.router == Router::Carrier {
            all.push(format!("{}-{}-cgn", self.prefix, site.name));
        }
        all
    }

    fn netns(&mut self, name: &str) -> Result<String, String> {
        let ns = format!("{}-{name}", self.prefix);
        run("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A veth pair from `a_name` in `a` to `b_name` in `b`; `bridged`
    /// puts the `a` end on `a`'s bridge.
    fn wire(
        &self,
        a: &str,
        a_name: &str,
        b: &str,
        b_name: &str,
        bridged: bool,
    ) -> Result<(), String> {
        run(
            "ip",
            &[
                "-n", a, "link", "add", a_name, "type", "veth", "peer", "name", b_name, "netns", b,
            ],
        )?;
        if bridged {
            run("ip", &["-n", a, "link", "set", a_name, "master", "br0"])?;
        }
        run("ip", &["-n", a, "link", "set", a_name, "up"])?;
        run("ip", &["-n", b, "link", "set", b_name, "up"])?;
        Ok(())
    }

    fn address(&self, ns: &str, dev: &str, cidr: &str) -> Result<(), String> {
        // IPv6's duplicate address detection would hold the address back
        // for a second or two; the lab knows it is unique.
        let mut args = vec!["-n", ns, "addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        run("ip", &args).map(|_| ())
    }

    fn router(&self, ns: &str, router: Router) -> Result<(), String> {
        run(
            "ip",
            &[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ],
        )?;
        nft(ns, &router_rules(router))
    }

    /// Starts miniupnpd on the router in `ns`, serving home `i`'s LAN,
    /// with NAT-PMP and PCP or with UPnP-IGD alone.
    fn miniupnpd(&mut self, ns: &str, i: u8, natpmp: bool) -> Result<(), String> {
        let conf = self.scratch.path().join(format!("miniupnpd-{i}.conf"));
        let text = [
            "ext_ifname=wan".to_owned(),
            "listening_ip=lan".into(),
            "http_port=0".into(),
            format!("enable_natpmp={}", if natpmp { "yes" } else { "no" }),
            "enable_upnp=yes".into(),
            "secure_mode=yes".into(),
            "system_uptime=yes".into(),
            format!("uuid=3d3cec3a-8cf0-11e0-98ee-00000000000{i}"),
            format!("allow 1024-65535 192.168.{i}.0/24 1024-65535"),
            "deny 0-65535 0.0.0.0/0 0-65535".into(),
            "upnp_table_name=filter".into(),
            "upnp_nat_table_name=filter".into(),
            "upnp_forward_chain=miniupnpd".into(),
            "upnp_nat_chain=prerouting_miniupnpd".into(),
            "upnp_nat_postrouting_chain=postrouting_miniupnpd".into(),
        ]
        .join("\n");
        std::fs::write(&conf, text + "\n").map_err(|e| e.to_string())?;
        let log = std::fs::File::create(self.scratch.path().join(format!("miniupnpd-{i}.log")))
            .map_err(|e| e.to_string())?;
        // Its own pid file: miniupnpd refuses to start when the default
        // one names a running instance, in whichever namespace.
        let pid = self.scratch.path().join(format!("miniupnpd-{i}.pid"));
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "miniupnpd", "-d", "-f"])
            .arg(&conf)
            .arg("-P")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("miniupnpd: {e}"))?;
        self.daemons.push(child);
        // It answers once it listens on the LAN (NAT-PMP's port, or
        // SSDP's): wait for that, bounded.
        let port = if natpmp { "5351" } else { "1900" };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "ss",
                    "-uln",
                    "sport",
                    "=",
                    &format!(":{port}"),
                ],
            )
            .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(port));
            if listening {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("miniupnpd in {ns} did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.daemons {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "delete", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// The lab's places: every kind of router the tests and the relay
/// benchmark know, each once or twice.
pub const PLACES: &[(&str, Router)] = &[
    ("pub1", Router::Public),
    ("pub2", Router::Public),
    ("home1", Router::Home),
    ("home2", Router::Home),
    ("sym1", Router::Symmetric),
    ("sym2", Router::Symmetric),
    ("cgn", Router::Carrier),
    ("upnp", Router::Upnp),
    ("igd", Router::UpnpOnly),
    ("liar", Router::LyingUpnp),
    ("noudp", Router::UdpBlocked),
    ("dual1", Router::DualHome),
    ("dual2", Router::DualSymmetric),
];

/// What every box in the lab runs with: no mDNS (each home has one box),
/// and a look at its address every 2 s so that changes show soon.
pub const LAB_CONFIG: &str = "[swarm]\nmdns = 'off'\n[reach]\nobserve_every_s = 2\n";

/// An owner's swarm in the lab: a box in every place, each joined from
/// its own LAN (as the owner would, walking from house to house with her
/// laptop), public members first so that later joins name them as seeds.
pub struct LabSwarm {
    /// The boxes, in the lab's order of places.
    pub boxes: Vec<Daemon>,
    /// The owner; her `cairn` runs in any place.
    pub alice: Owner,
    /// The lab (dropped last).
    pub lab: Lab,
}

impl LabSwarm {
    /// Builds the lab and the swarm; `extra` is appended to the
    /// configuration of the box in each place.
    pub fn start(places: &[(&str, Router)], extra: &dyn Fn(&Site) -> String) -> Self {
        for tool in ["nft", "conntrack", "tcpdump"] {
            assert!(
                run("sh", &["-c", &format!("command -v {tool}")]).is_ok(),
                "{tool} is missing: scripts/setup installs it"
            );
        }
        let lab = Lab::build(places).expect("root, yet the lab could not be built");
        let alice = Owner::new();
        let init = alice.json(&["init"]);
        eprintln!("the owner's home: {}", alice.home.path().display());
        let client =
            cairn_proto::ids::NodeId::from_human(init[0]["client_key"].as_str().unwrap()).unwrap();
        let boxes: Vec<Daemon> = lab
            .sites
            .iter()
            .map(|site| {
                let config = format!("{LAB_CONFIG}{}", extra(site));
                Daemon::start_in(&site.netns, site.ip, &[client], &config)
            })
            .collect();
        let swarm = Self { boxes, alice, lab };
        swarm.alice.json(&["swarm", "create"]);
        for (site, node) in swarm.lab.sites.iter().zip(&swarm.boxes) {
            let id = node.id.to_human();
            swarm.json_in(&site.netns, &["add-node", &id, &node.addr.to_string()]);
            let ticket = swarm.alice.run(&["swarm", "invite", &id], None);
            let ticket = String::from_utf8(ticket.stdout).unwrap();
            swarm.json_in(&site.netns, &["join", &id, "--invite", ticket.trim()]);
        }
        swarm
    }

    /// `cairn --json ARGS` in `netns`, expected to succeed.
    pub fn json_in(&self, netns: &str, args: &[&str]) -> Vec<Value> {
        self.try_json_in(netns, args)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `cairn --json ARGS` in `netns`; its error output if it failed.
    pub fn try_json_in(&self, netns: &str, args: &[&str]) -> Result<Vec<Value>, String> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.alice.run_in(Some(netns), &all, None);
        if !out.status.success() {
            return Err(format!(
                "cairn {args:?} in {netns}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).map_err(|e| format!("{line}: {e}")))
            .collect()
    }

    /// The places whose box can reach the swarm at all.
    pub fn reachable(&self) -> Vec<usize> {
        (0..self.boxes.len())
            .filter(|&i| self.lab.sites[i].router != Router::UdpBlocked)
            .collect()
    }

    /// Waits until every box that can reach the swarm sees every other
    /// such box up and reaches it the way its routers allow (a relayed
    /// path moves to a better one in the background once there is one);
    /// the matrix of paths. A failure names the pairs still wrong.
    pub fn wait_for_paths(&self, limit: Duration) -> Matrix {
        eventually(limit, "every pair connected as the routers allow", || {
            let views = self.snapshot()?;
            let matrix = self.matrix(&views);
            if matrix.wrong.is_empty() {
                Ok(matrix)
            } else {
                Err(matrix.wrong.join("; "))
            }
        })
    }

    /// Each box's member list once every box that can reach the swarm
    /// sees every other such box up and has reached it, in the order of
    /// [`LabSwarm::reachable`].
    fn snapshot(&self) -> Result<Vec<Vec<Value>>, String> {
        let reachable = self.reachable();
        let sites = &self.lab.sites;
        {
            let mut views = Vec::new();
            for &i in &reachable {
                let asked = self.boxes[i].id.to_human();
                let members = self.try_json_in(&sites[i].netns, &["members", "--node", &asked])?;
                for &j in reachable.iter().filter(|&&j| j != i) {
                    let id = self.boxes[j].id.to_human();
                    let member =
                        members
                            .iter()
                            .find(|m| m["id"] == id.as_str())
                            .ok_or_else(|| {
                                format!("{} does not know {}", sites[i].name, sites[j].name)
                            })?;
                    if member["up"] != true || member["path"].is_null() {
                        return Err(format!(
                            "{} sees {}: {member}",
                            sites[i].name, sites[j].name
                        ));
                    }
                }
                views.push(members);
            }
            Ok(views)
        }
    }

    /// The path every box used to every other (from `views`, as
    /// [`LabSwarm::snapshot`] gives them) against the one its
    /// routers allow: the count of each kind, and the pairs that differ.
    fn matrix(&self, views: &[Vec<Value>]) -> Matrix {
        let reachable = self.reachable();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut wrong = Vec::new();
        for (i, from) in self.lab.sites.iter().enumerate() {
            for (j, to) in self.lab.sites.iter().enumerate().filter(|&(j, _)| j != i) {
                let view = reachable.iter().position(|&r| r == i).map(|v| &views[v]);
                let member = view.and_then(|members| {
                    members
                        .iter()
                        .find(|m| m["id"] == self.boxes[j].id.to_human().as_str())
                });
                // "relayed via cn…" counts as "relayed"; "direct ipv6"
                // and "punched ipv6" as they are.
                let path = member.and_then(|m| m["path"].as_str()).map(|p| {
                    if p.starts_with("relayed") {
                        "relayed".to_owned()
                    } else {
                        p.to_owned()
                    }
                });
                // Whose rendezvous `to` is, in its own advert.
                let rendezvous_is_from = member
                    .and_then(|m| m["rendezvous"].as_str())
                    .is_some_and(|r| r == self.boxes[i].id.to_human());
                let want = expected(from, to, rendezvous_is_from);
                match (want, path.as_deref()) {
                    ([], None) => *counts.entry("failed".into()).or_default() += 1,
                    (want, Some(got)) if want.contains(&got) => {
                        *counts.entry(got.into()).or_default() += 1;
                    }
                    (want, got) => wrong.push(format!(
                        "{} -> {}: expected {want:?}, used {got:?}",
                        from.name, to.name
                    )),
                }
            }
        }
        Matrix {
            pairs: self.boxes.len() * (self.boxes.len() - 1),
            counts,
            wrong,
        }
    }

    /// On a failure, keeps every box's log under `target/nat-lab-logs/`
    /// (and, with `CAIRN_LAB_PAUSE=SECONDS`, keeps the lab up that long
    /// for a person to look into it).
    pub fn keep_logs_on_failure(&self) -> KeepLogs<'_> {
        KeepLogs(self)
    }
}

/// The lab's matrix of paths.
pub struct Matrix {
    /// Ordered pairs of boxes.
    pub pairs: usize,
    /// Pairs by the path used (`failed`: no path, as the lab expects).
    pub counts: BTreeMap<String, usize>,
    /// Pairs whose path is not the one the routers allow.
    pub wrong: Vec<String>,
}

impl Matrix {
    /// `nat pairs=N direct=D mapped=M punched=P relayed=R failed=F`, where
    /// direct and punched count both address families.
    pub fn line(&self) -> String {
        let count = |kind: &str| self.counts.get(kind).copied().unwrap_or(0);
        format!(
            "nat pairs={} direct={} mapped={} punched={} relayed={} failed={}",
            self.pairs,
            count("direct") + count("direct ipv6"),
            count("mapped"),
            count("punched") + count("punched ipv6"),
            count("relayed"),
            count("failed")
        )
    }

    /// `nat ipv6 direct=D punched=P`: the pairs of [`Matrix::line`] that
    /// went over IPv6.
    pub fn ipv6_line(&self) -> String {
        let count = |kind: &str| self.counts.get(kind).copied().unwrap_or(0);
        format!(
            "nat ipv6 direct={} punched={}",
            count("direct ipv6"),
            count("punched ipv6")
        )
    }
}

/// The paths a box behind `from` may use to one behind `to`, given
/// whether `from` is the member `to` waits for calls at now. None: no
/// path can exist.
pub fn expected(from: &Site, to: &Site, to_rendezvous_is_from: bool) -> &'static [&'static str] {
    use Router::*;
    // IPv6 first where both have it: no NAT, only firewalls, which a
    // punch opens.
    if from.router.ipv6() && to.router.ipv6() {
        return if to.router == Public {
            &["direct ipv6"]
        } else {
            &["punched ipv6"]
        };
    }
    match (from.router.ipv4(), to.router.ipv4()) {
        (UdpBlocked, _) | (_, UdpBlocked) => &[],
        (_, Public) => &["direct"],
        (_, Upnp) => &["mapped"],
        (Symmetric, Home | Carrier | LyingUpnp) => &["relayed"],
        (_, Home | Carrier | LyingUpnp) => &["punched"],
        // Only the rendezvous of a box behind a symmetric NAT can punch
        // into it (its NAT keeps that port for the rendezvous alone); a
        // public member that was its rendezvous when it dialled keeps the
        // punched path, one that was not relays (and moves to a punch once
        // it becomes the rendezvous).
        (Public, Symmetric) if to_rendezvous_is_from => &["punched"],
        (Public, Symmetric) => &["relayed", "punched"],
        (_, Symmetric) => &["relayed"],
        (_, UpnpOnly | DualHome | DualSymmetric) => unreachable!("Router::ipv4 maps them"),
    }
}

/// Polls `check` every 500 ms until it holds, or fails after `limit`.
pub fn eventually<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(value) => {
                eprintln!("{what}: after {:?}", started.elapsed());
                return value;
            }
            Err(last) if started.elapsed() > limit => {
                panic!("{what}: not within {limit:?}; last: {last}")
            }
            Err(last) if std::env::var_os("CAIRN_LAB_VERBOSE").is_some() => {
                eprintln!("{what}: {last}");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// See [`LabSwarm::keep_logs_on_failure`].
pub struct KeepLogs<'a>(&'a LabSwarm);

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = std::env::current_dir()
            .unwrap_or_default()
            .join("../../target/nat-lab-logs");
        let _ = std::fs::create_dir_all(&dir);
        for (daemon, site) in self.0.boxes.iter().zip(&self.0.lab.sites) {
            let _ = std::fs::write(dir.join(format!("{}.log", site.name)), daemon.log());
        }
        eprintln!("the boxes' logs are in {}", dir.display());
        if let Some(secs) = std::env::var("CAIRN_LAB_PAUSE")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            eprintln!("the lab stays up for {secs} s");
            std::thread::sleep(Duration::from_secs(secs));
        }
    }
}
