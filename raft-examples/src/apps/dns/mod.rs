//! The `dns` app: a replicated service registry with an HTTP registration API and a DNS
//! server answering from each node's replica.
//!
//! | request | answer |
//! |---|---|
//! | `PUT /v1/services/{service}/{instance}`, body `{"address": ip, "port": N, "ttl": secs, "tags": [..]}` | 200 `{"ok":true,"index":N}` |
//! | `POST /v1/services/{service}/{instance}/renew` | 200 `{"ok":true,"index":N}`, or 404 when unknown or expired |
//! | `DELETE /v1/services/{service}/{instance}` | 200 `{"ok":true,"index":N,"existed":bool}` |
//! | `GET /v1/services` | 200 `{"services": {"<service>": count}}` |
//! | `GET /v1/services/{service}` | 200 `{"instances": [{"instance","address","port","tags","expires_in"}]}` |
//!
//! GETs are linearizable (`?stale`: this replica). Service, instance and tag names are DNS
//! labels (400 otherwise), compared in lower case. `port`, `ttl` (1 to 86,400 s) and
//! `tags` are optional. Errors are JSON `{"error": "..."}`. The DNS side is described in
//! [`answer`]; expiry in [`expiry`].

pub mod answer;
pub mod expiry;
mod server;
pub mod state;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, Request};
use serde::{Deserialize, Serialize};

use self::answer::Zone;
use self::expiry::ExpiryClock;
use self::server::Dns;
pub use self::state::{validate_label, DnsCommand, DnsResponse, InstanceSpec, Registry, MAX_TAGS, MAX_TTL};
use crate::host::{App, AppNode, Service};
use crate::http::{self, ApiError, HttpResponse, HttpRuntime};

/// The flags of the `dns` app beside the ones every app takes.
#[derive(Clone, Debug, clap::Args)]
pub struct DnsArgs {
    /// The address to serve DNS on, over UDP and TCP (host:port).
    #[arg(long, default_value = "127.0.0.1:8600")]
    pub dns: String,
    /// The zone served.
    #[arg(long, default_value = "service.local.")]
    pub domain: String,
    /// The TTL of answers, in seconds.
    #[arg(long, default_value_t = 5)]
    pub dns_ttl: u32,
    /// The TTL of negative answers (NXDOMAIN, no records of the type), and the SOA minimum.
    #[arg(long, default_value_t = 5)]
    pub dns_negative_ttl: u32,
}

/// The body of a registration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    address: IpAddr,
    #[serde(default)]
    port: u16,
    #[serde(default)]
    ttl: Option<u32>,
    #[serde(default)]
    tags: Vec<String>,
}

/// One instance in `GET /v1/services/{service}`.
#[derive(Serialize)]
struct InstanceView {
    instance: String,
    address: IpAddr,
    port: u16,
    tags: Vec<String>,
    /// Seconds left by this node's clock; `null` without a ttl.
    expires_in: Option<u64>,
}

/// What a request under `/v1/services` asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    List,
    Service(&'a str),
    Instance(&'a str, &'a str),
    Renew(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v1/services")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::List);
    }
    let parts: Vec<&str> = rest.strip_prefix('/')?.split('/').collect();
    match parts.as_slice() {
        [s] => Some(Route::Service(s)),
        [s, i] => Some(Route::Instance(s, i)),
        [s, i, "renew"] => Some(Route::Renew(s, i)),
        _ => None,
    }
}

fn label(raw: &str) -> Result<String, ApiError> {
    validate_label(&http::decode_path(raw)?).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Checks a registration body and makes it an [`InstanceSpec`].
fn spec(body: &[u8]) -> Result<InstanceSpec, ApiError> {
    let body: RegisterBody = serde_json::from_slice(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"address\": IP, \"port\": N, \"ttl\": seconds, \"tags\": [labels]}}: {e}"
        ))
    })?;
    if let Some(ttl) = body.ttl {
        if !(1..=MAX_TTL).contains(&ttl) {
            return Err(ApiError::BadRequest(format!("the ttl is {ttl}; it must be 1 to {MAX_TTL} seconds")));
        }
    }
    if body.tags.len() > MAX_TAGS {
        return Err(ApiError::BadRequest(format!("{} tags; at most {MAX_TAGS} are allowed", body.tags.len())));
    }
    let tags = body
        .tags
        .iter()
        .map(|t| validate_label(t).map_err(|e| ApiError::BadRequest(format!("tag: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(InstanceSpec { address: body.address, port: body.port, ttl: body.ttl, tags })
}

/// The `dns` app.
pub struct DnsApp {
    dns: Arc<Dns>,
    dns_addr: String,
    clock: Arc<Mutex<ExpiryClock>>,
}

impl DnsApp {
    /// The app serving `args.domain` on `args.dns`.
    pub fn new(args: &DnsArgs) -> Result<Self, answer::ZoneError> {
        let zone = Zone::new(&args.domain, args.dns_ttl, args.dns_negative_ttl)?;
        Ok(DnsApp {
            dns: Arc::new(Dns::new(zone)),
            dns_addr: args.dns.clone(),
            clock: Arc::new(Mutex::new(ExpiryClock::default())),
        })
    }

    fn instances(&self, registry: &Registry, service: &str) -> Vec<InstanceView> {
        let clock = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        registry
            .service(service)
            .into_iter()
            .flatten()
            .map(|(name, i)| InstanceView {
                instance: name.clone(),
                address: i.spec.address,
                port: i.spec.port,
                tags: i.spec.tags.clone(),
                expires_in: i.spec.ttl.map(|ttl| clock.expires_in(service, name, ttl, i.generation, now)),
            })
            .collect()
    }

    async fn get(
        &self,
        node: &AppNode<Registry>,
        stale: bool,
        service: Option<String>,
    ) -> Result<HttpResponse, ApiError> {
        if !stale {
            node.read(|_| ()).await?;
        }
        Ok(match service {
            None => {
                let services: BTreeMap<String, usize> =
                    node.read_stale(|r| r.services().map(|(s, n)| (s.to_owned(), n)).collect());
                http::json_ok(&serde_json::json!({ "services": services }))
            }
            Some(s) => {
                let instances = node.read_stale(|r| self.instances(r, &s));
                http::json_ok(&serde_json::json!({ "instances": instances }))
            }
        })
    }
}

impl App for DnsApp {
    type Machine = Registry;
    const NAME: &'static str = "dns";
    const ABOUT: &'static str = "One node of a replicated service registry answering DNS queries";
    const CLUSTER_ID: u64 = 0x646e_0001;

    fn max_body_size(&self, _: &Method, _: &str) -> usize {
        64 * 1024
    }

    async fn handle<'a>(
        &'a self,
        node: &'a AppNode<Registry>,
        request: Request<Bytes>,
    ) -> Result<HttpResponse, ApiError> {
        let path = request.uri().path();
        let method = request.method();
        let stale = http::query_flag(request.uri().query(), "stale");
        let not_allowed = |allowed| Err(http::method_not_allowed(method, path, allowed));
        match route(path).ok_or_else(|| http::not_found(path))? {
            Route::List if method == Method::GET => self.get(node, stale, None).await,
            Route::List => not_allowed("GET"),
            Route::Service(s) if method == Method::GET => self.get(node, stale, Some(label(s)?)).await,
            Route::Service(_) => not_allowed("GET"),
            Route::Renew(s, i) if method == Method::POST => {
                let (service, instance) = (label(s)?, label(i)?);
                match node.propose(DnsCommand::Renew { service: service.clone(), instance: instance.clone() }).await? {
                    DnsResponse::Renewed { index, found: true } => {
                        Ok(http::json_ok(&serde_json::json!({"index": index, "ok": true})))
                    }
                    DnsResponse::Renewed { found: false, .. } => {
                        Err(ApiError::NotFound(format!("no instance `{instance}` of `{service}`")))
                    }
                    other => Err(ApiError::Internal(format!("unexpected answer to a renewal: {other:?}"))),
                }
            }
            Route::Renew(..) => not_allowed("POST"),
            Route::Instance(s, i) if method == Method::PUT => {
                let (service, instance) = (label(s)?, label(i)?);
                let spec = spec(request.body())?;
                match node.propose(DnsCommand::Register { service, instance, spec }).await? {
                    DnsResponse::Registered { index } => {
                        Ok(http::json_ok(&serde_json::json!({"index": index, "ok": true})))
                    }
                    other => Err(ApiError::Internal(format!("unexpected answer to a registration: {other:?}"))),
                }
            }
            Route::Instance(s, i) if method == Method::DELETE => {
                let (service, instance) = (label(s)?, label(i)?);
                match node.propose(DnsCommand::Deregister { service, instance }).await? {
                    DnsResponse::Deregistered { index, existed } => {
                        Ok(http::json_ok(&serde_json::json!({"existed": existed, "index": index, "ok": true})))
                    }
                    other => Err(ApiError::Internal(format!("unexpected answer to a deregistration: {other:?}"))),
                }
            }
            Route::Instance(..) => not_allowed("PUT or DELETE"),
        }
    }

    fn services<R: HttpRuntime>(&self, rt: &R, node: &AppNode<Registry>) -> Vec<Service> {
        let expiry = server::expiry(rt.clone(), node.clone(), self.clock.clone());
        let addr: SocketAddr = match self.dns_addr.to_socket_addrs().map(|mut a| a.next()) {
            Ok(Some(a)) => a,
            Ok(None) | Err(_) => {
                let e = format!("--dns {} is not a socket address", self.dns_addr);
                return vec![Box::pin(async move { Err(e) })];
            }
        };
        vec![
            server::udp(self.dns.clone(), node.clone(), addr),
            server::tcp(rt.clone(), self.dns.clone(), node.clone(), addr),
            expiry,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route("/v1/services"), Some(Route::List));
        assert_eq!(route("/v1/services/web"), Some(Route::Service("web")));
        assert_eq!(route("/v1/services/web/a"), Some(Route::Instance("web", "a")));
        assert_eq!(route("/v1/services/web/a/renew"), Some(Route::Renew("web", "a")));
        assert_eq!(route("/v1/services/web/a/b"), None);
        assert_eq!(route("/v1/servicesx"), None);
        assert_eq!(route("/kv/a"), None);
    }

    #[test]
    fn registration_bodies_are_checked() {
        let s = spec(br#"{"address": "10.0.0.1", "port": 80, "ttl": 5, "tags": ["Blue"]}"#).unwrap();
        assert_eq!(s.tags, vec!["blue".to_string()]);
        assert_eq!(spec(br#"{"address": "::1"}"#).unwrap().ttl, None);
        for bad in [
            &br#"{"address": "nope"}"#[..],
            br#"{"address": "10.0.0.1", "ttl": 0}"#,
            br#"{"address": "10.0.0.1", "ttl": 86401}"#,
            br#"{"address": "10.0.0.1", "tags": ["a.b"]}"#,
            br#"{"address": "10.0.0.1", "port": 70000}"#,
            br#"{"address": "10.0.0.1", "extra": 1}"#,
            b"not json",
        ] {
            assert!(matches!(spec(bad), Err(ApiError::BadRequest(_))), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn names_must_be_labels() {
        assert_eq!(label("Web").unwrap(), "web");
        assert!(matches!(label("a_b"), Err(ApiError::BadRequest(_))));
        assert!(matches!(label("a%2Eb"), Err(ApiError::BadRequest(_))));
    }
}
