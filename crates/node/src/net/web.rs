//! The box's page and `/metrics` over HTTP/1.1 on the LAN (hyper). The
//! socket comes from systemd (`cairnd.socket`, port 80) or `[web] listen`.
//! Every visitor is a stranger until an owner's link says otherwise, so
//! connections, header time and form bodies are bounded, and only the
//! owner's view reads more than the health view shows.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use cairn_host::unix_now;
use cairn_proto::SettingsChange;
use cairn_proto::ids::{NodeId, OwnerId};
use cairn_proto::signed::PanelLink;
use cairn_store::ShardStore;

use super::Server;
use super::gossip::GossipService;
use super::steward::StewardService;
use crate::donation::Donation;
use crate::face::metrics::{self, RequestCounters};
use crate::face::page::{self, OwnerView, UsageRow};
use crate::face::{DiskRow, MemberRow, Snapshot};
use crate::ownership::NodeControl;
use crate::settings::Settings;

/// Connections served at once; more wait in the kernel's backlog.
const CONNECTIONS: usize = 32;
/// Longest a form's body may be.
const FORM_LIMIT: usize = 32 * 1024;
/// Owners listed in the owner's view.
const USAGE_ROWS: usize = 200;
/// How long the request's head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stop waits for answers in flight.
const DRAIN: Duration = Duration::from_secs(3);

/// What the page is made from: the node's services, shared.
pub struct WebSources {
    /// This node.
    pub node: NodeId,
    /// The shard store.
    pub store: Arc<ShardStore>,
    /// Ownership and health.
    pub control: Arc<NodeControl>,
    /// The swarm as gossip knows it.
    pub gossip: Arc<GossipService>,
    /// The steward, on a steward.
    pub steward: Option<Arc<StewardService>>,
    /// The request server (its peers).
    pub server: Arc<Server>,
    /// The settings that stick.
    pub settings: Arc<Settings>,
    /// Whom the box evicted.
    pub donation: Arc<Donation>,
    /// The system and its updates, if the box takes updates.
    pub updates: Option<Arc<crate::updates::UpdateInbox>>,
    /// Requests counted by the server.
    pub counters: RequestCounters,
    /// When the node's services started.
    pub started: Instant,
    /// Longest an owner's link may be valid for, seconds.
    pub link_longest_s: u64,
}

impl WebSources {
    /// The node now (reads disks' figures and the steward's table: call it
    /// off the runtime's threads).
    fn snapshot(&self) -> Snapshot {
        let health = self.control.health();
        let ownership = self.control.ownership();
        let config = self.settings.config();
        Snapshot {
            node: self.node.to_human(),
            software: cairn_net::software(),
            state: health.state.to_owned(),
            reasons: health.reasons,
            claimed: ownership.owner.is_some(),
            draining: ownership.draining,
            pairing: self.control.pairing_open(Instant::now()),
            temperature_mc: health.temperature_mc,
            power: health.power,
            disks: self.store.disk_stats().iter().map(DiskRow::of).collect(),
            members: self
                .gossip
                .members()
                .iter()
                .filter(|m| m.member.node != self.node)
                .map(MemberRow::of)
                .collect(),
            peers: self.server.peers(),
            steward: self.steward.as_ref().map(|s| s.progress()),
            uptime_s: self.started.elapsed().as_secs(),
            settings: Some(crate::settings::info(&config, false)),
            system: self.updates.as_ref().map(|u| u.info()),
        }
    }

    fn owner(&self) -> Option<OwnerId> {
        self.control.ownership().info().owner
    }

    fn owner_view(&self, query: String, notice: Option<String>) -> OwnerView {
        let box_owner = self.owner();
        let usage = self
            .store
            .usage(USAGE_ROWS)
            .unwrap_or_else(|e| {
                warn!("the page cannot list owners' use: {e}");
                Vec::new()
            })
            .into_iter()
            .map(|u| UsageRow {
                owner: u.owner.to_hex(),
                box_owner: Some(u.owner) == box_owner,
                bytes: u.bytes,
                shards: u.shards,
                evicted: self.donation.is_evicted(&u.owner),
            })
            .collect();
        OwnerView {
            usage,
            settings: crate::settings::info(&self.settings.config(), false),
            query,
            notice,
        }
    }

    /// Whether `query` carries a valid owner's link: the link, or the page
    /// that refuses it.
    fn check_link(&self, query: Option<&str>) -> Result<PanelLink, String> {
        let link = PanelLink::from_query(query).map_err(|e| e.to_string())?;
        link.verify(
            &self.node,
            self.owner().as_ref(),
            unix_now(),
            self.link_longest_s,
        )
        .map_err(|e| e.to_string())?;
        Ok(link)
    }
}

type Answer = Response<Full<Bytes>>;

fn answer(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Answer {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        // The page carries no script and loads nothing from elsewhere;
        // say so to the browser too.
        .header(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        )
        .header(header::REFERRER_POLICY, "no-referrer")
        .body(Full::new(body.into()))
        .expect("a valid response")
}

const HTML: &str = "text/html; charset=utf-8";

/// Serves `listener` until `stop` turns true; answers in flight get a
/// moment to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    sources: Arc<WebSources>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&slots).acquire_owned() => permit.expect("never closed"),
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => break,
        };
        let (stream, from) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                warn!("the page cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let sources = Arc::clone(&sources);
        let service = hyper::service::service_fn(move |request| {
            let sources = Arc::clone(&sources);
            async move { Ok::<_, Infallible>(route(&sources, request, from).await) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!(%from, "page connection: {e}");
            }
            drop(permit);
        });
    }
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

async fn route(sources: &Arc<WebSources>, request: Request<Incoming>, from: SocketAddr) -> Answer {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    match (request.method(), path.as_str()) {
        (&Method::GET | &Method::HEAD, "/") => {
            let sources = Arc::clone(sources);
            let page = blocking(move || page::render(&sources.snapshot(), None)).await;
            answer(StatusCode::OK, HTML, page)
        }
        (&Method::GET | &Method::HEAD, "/metrics") => {
            let sources = Arc::clone(sources);
            let text =
                blocking(move || metrics::render(&sources.snapshot(), &sources.counters)).await;
            answer(StatusCode::OK, metrics::CONTENT_TYPE, text)
        }
        (&Method::GET | &Method::HEAD, "/owner") => {
            let sources = Arc::clone(sources);
            let notice = query
                .as_deref()
                .is_some_and(|q| q.split('&').any(|p| p == "saved=1"))
                .then(|| {
                    "Settings saved; the node restarted its services to take them.".to_owned()
                });
            blocking(move || match sources.check_link(query.as_deref()) {
                Ok(link) => {
                    let view = sources.owner_view(link.to_query(), notice);
                    answer(
                        StatusCode::OK,
                        HTML,
                        page::render(&sources.snapshot(), Some(&view)),
                    )
                }
                Err(why) => {
                    info!(%from, "the page refused an owner's link: {why}");
                    answer(StatusCode::FORBIDDEN, HTML, page::refused(&why))
                }
            })
            .await
        }
        (&Method::POST, "/owner/settings") => settings_form(sources, request, from).await,
        (&Method::GET | &Method::HEAD | &Method::POST, _) => answer(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found: the page is at /, figures for tools at /metrics\n",
        ),
        _ => answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET, HEAD and POST\n",
        ),
    }
}

/// The owner's settings form: the link travels in the form, checked as on
/// the page, then the change is made as `cairn settings` makes it.
async fn settings_form(
    sources: &Arc<WebSources>,
    request: Request<Incoming>,
    from: SocketAddr,
) -> Answer {
    let body = match Limited::new(request.into_body(), FORM_LIMIT)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                format!("the form could not be read: {e}\n"),
            );
        }
    };
    let fields: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
    let sources = Arc::clone(sources);
    blocking(move || {
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let link = field("link");
        let link = match sources.check_link(link.as_deref()) {
            Ok(link) => link,
            Err(why) => {
                info!(%from, "the page refused a settings form: {why}");
                return answer(StatusCode::FORBIDDEN, HTML, page::refused(&why));
            }
        };
        let change = match form_change(&field) {
            Ok(change) => change,
            Err(why) => return owner_page(&sources, &link, why, StatusCode::BAD_REQUEST),
        };
        match sources.settings.change(&change) {
            Ok(_) => {
                info!(%from, "settings changed from the owner's page");
                Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(
                        header::LOCATION,
                        format!("/owner?{}&saved=1", link.to_query()),
                    )
                    .body(Full::new(Bytes::new()))
                    .expect("a valid response")
            }
            Err(e) => owner_page(&sources, &link, e.to_string(), StatusCode::BAD_REQUEST),
        }
    })
    .await
}

fn owner_page(
    sources: &WebSources,
    link: &PanelLink,
    notice: String,
    status: StatusCode,
) -> Answer {
    let view = sources.owner_view(link.to_query(), Some(notice));
    answer(status, HTML, page::render(&sources.snapshot(), Some(&view)))
}

/// The change a settings form asks for (empty fields unset).
fn form_change(field: &dyn Fn(&str) -> Option<String>) -> Result<SettingsChange, String> {
    let number = |name: &str, what: &str| -> Result<Option<Option<u64>>, String> {
        match field(name) {
            None => Ok(None),
            Some(text) if text.is_empty() => Ok(Some(None)),
            Some(text) => text.parse::<u64>().map(|n| Some(Some(n))).map_err(|_| {
                format!("{what}: {text:?} is not a whole number; nothing was changed")
            }),
        }
    };
    let owners = match field("owners") {
        None => None,
        Some(text) => Some(
            text.split_whitespace()
                .map(|hex| {
                    OwnerId::from_hex(hex).map_err(|e| {
                        format!("owners: {hex:?} is not an owner id ({e}); nothing was changed")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };
    let lease = number("longest_lease_days", "longest lease")?;
    Ok(SettingsChange {
        site: field("site").map(|s| (!s.is_empty()).then_some(s)),
        quota_gib: number("quota_gib", "space given")?,
        donation_owners: owners,
        per_owner_mib: number("per_owner_mib", "each owner's share")?,
        longest_lease_days: match lease {
            Some(Some(days)) => Some(days),
            Some(None) => {
                return Err("longest lease: give a number of days; nothing was changed".into());
            }
            None => None,
        },
    })
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the page's work does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Result<SettingsChange, String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        form_change(&|name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
        })
    }

    #[test]
    fn a_form_becomes_a_change_and_empty_fields_unset() {
        let change = form(&[
            ("site", "cellar"),
            ("quota_gib", ""),
            ("per_owner_mib", "512"),
            ("longest_lease_days", "90"),
            ("owners", ""),
        ])
        .unwrap();
        assert_eq!(change.site, Some(Some("cellar".into())));
        assert_eq!(change.quota_gib, Some(None));
        assert_eq!(change.per_owner_mib, Some(Some(512)));
        assert_eq!(change.longest_lease_days, Some(90));
        assert_eq!(change.donation_owners, Some(vec![]));
        let err = form(&[("quota_gib", "lots")]).unwrap_err();
        assert!(
            err.contains("lots") && err.contains("nothing was changed"),
            "{err}"
        );
        let err = form(&[("owners", "zz")]).unwrap_err();
        assert!(err.contains("zz"), "{err}");
        assert!(form(&[]).unwrap().is_empty());
    }
}
