//! The connection to Redis or Valkey: one multiplexed connection every call shares, made here
//! (not by redis-rs's ConnectionManager) so that every byte the store sends goes through the
//! reply bound ([`super::bounded`]), a Sentinel can be asked where the primary is, and a
//! connection that failed to authenticate is simply tried again by the heartbeat.
//!
//! A call never waits for a connection to be made: with none, its operation fails at once (the
//! failure policy applies) and one attempt starts in the background; the heartbeat makes one
//! every second while there is none.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::bounded::Bounded;
use super::StoreSettings;

/// How long making a connection (Sentinel's answer, TCP, TLS, AUTH, the role) may take.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// Where the store is.
#[derive(Debug, Clone)]
enum Target {
    Direct(ConnectionAddr),
    /// Sentinels to ask for the primary of `service`.
    Sentinel {
        nodes: Vec<(String, u16)>,
        service: String,
    },
}

pub struct Link {
    target: Target,
    redis: RedisConnectionInfo,
    tls: Option<tokio_rustls::TlsConnector>,
    current: ArcSwapOption<Current>,
    generation: AtomicU64,
    connecting: AtomicBool,
    /// Set to itself, for the tasks it spawns.
    me: Weak<Link>,
}

struct Current {
    connection: MultiplexedConnection,
    generation: u64,
}

/// A connection as an operation holds it: the connection and which one it was.
pub struct Held {
    pub connection: MultiplexedConnection,
    generation: u64,
}

impl Link {
    /// Opens nothing yet.
    pub fn new(settings: &StoreSettings) -> Result<Arc<Link>> {
        let (target, mut redis) = target(&settings.url)
            .with_context(|| format!("state {} is not a Redis URL", settings.shown))?;
        if let Some(password) = &settings.password {
            redis = redis.set_password(password.expose());
        }
        let tls = match &target {
            Target::Direct(ConnectionAddr::TcpTls { .. }) => {
                let config = crate::twilio::http::tls_config(settings.ca_pem.as_deref())
                    .with_context(|| format!("state {}: TLS", settings.shown))?;
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            _ => None,
        };
        Ok(Arc::new_cyclic(|me| Link {
            target,
            redis,
            tls,
            current: ArcSwapOption::empty(),
            generation: AtomicU64::new(0),
            connecting: AtomicBool::new(false),
            me: me.clone(),
        }))
    }

    /// The connection, if there is one; otherwise one is being made in the background.
    pub fn get(&self) -> Option<Held> {
        match &*self.current.load() {
            Some(current) => Some(Held {
                connection: current.connection.clone(),
                generation: current.generation,
            }),
            None => {
                self.connect_in_background();
                None
            }
        }
    }

    /// The connection, made now (within [`CONNECT_WITHIN`]) when there is none.
    pub async fn get_or_connect(&self) -> Result<Held, String> {
        if let Some(held) = self.get_quietly() {
            return Ok(held);
        }
        self.connect().await
    }

    fn get_quietly(&self) -> Option<Held> {
        self.current.load().as_ref().map(|current| Held {
            connection: current.connection.clone(),
            generation: current.generation,
        })
    }

    /// Drops `held` after an error that says the connection is of no more use (closed, the
    /// wrong server, a demoted primary): the next operation or heartbeat makes a new one.
    pub fn forget(&self, held: &Held) {
        self.forget_generation(held.generation);
    }

    fn forget_generation(&self, generation: u64) {
        let current = self.current.load();
        if current.as_ref().is_some_and(|c| c.generation == generation) {
            self.current.store(None);
        }
    }

    fn connect_in_background(&self) {
        if self.connecting.swap(true, Ordering::AcqRel) {
            return;
        }
        let Some(link) = self.me.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            let _ = link.connect().await;
            link.connecting.store(false, Ordering::Release);
        });
    }

    /// Makes a connection and makes it the current one.
    async fn connect(&self) -> Result<Held, String> {
        let made = tokio::time::timeout(CONNECT_WITHIN, self.open()).await;
        let (connection, driver) = match made {
            Ok(Ok(made)) => made,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(format!(
                    "no connection within {} ms",
                    CONNECT_WITHIN.as_millis()
                ))
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let me = self.me.clone();
        tokio::spawn(async move {
            driver.await;
            // The connection closed: the next operation or heartbeat makes another.
            if let Some(link) = me.upgrade() {
                link.forget_generation(generation);
            }
        });
        self.current.store(Some(Arc::new(Current {
            connection: connection.clone(),
            generation,
        })));
        Ok(Held {
            connection,
            generation,
        })
    }

    async fn open(
        &self,
    ) -> Result<(MultiplexedConnection, impl std::future::Future<Output = ()>), String> {
        let addr = match &self.target {
            Target::Direct(addr) => addr.clone(),
            Target::Sentinel { nodes, service } => primary_of(nodes, service).await?,
        };
        let stream = self.stream(&addr).await?;
        let config = AsyncConnectionConfig::new().set_response_timeout(None);
        let (mut connection, driver) =
            MultiplexedConnection::new_with_config(&self.redis, stream, config)
                .await
                .map_err(|e| super::one_line(&e))?;
        let driver = tokio::spawn(driver);
        let checked = self.check_role(&mut connection).await;
        if let Err(why) = checked {
            driver.abort();
            return Err(why);
        }
        Ok((connection, async move {
            let _ = driver.await;
        }))
    }

    /// Refuses a Redis Cluster node (one call's limits are keys in several slots), and, behind
    /// Sentinel, a server that is no longer the primary.
    async fn check_role(&self, connection: &mut MultiplexedConnection) -> Result<(), String> {
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(connection)
            .await
            .map_err(|e| super::one_line(&e))?;
        if info.lines().any(|l| l.trim() == "cluster_enabled:1") {
            return Err(CLUSTER_REFUSED.to_owned());
        }
        if let Target::Sentinel { .. } = self.target {
            let role: Vec<redis::Value> = redis::cmd("ROLE")
                .query_async(connection)
                .await
                .map_err(|e| super::one_line(&e))?;
            if !matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
                return Err("the server Sentinel named is not the primary (yet)".into());
            }
        }
        Ok(())
    }

    async fn stream(&self, addr: &ConnectionAddr) -> Result<Bounded<Box<dyn Io>>, String> {
        let stream: Box<dyn Io> = match addr {
            ConnectionAddr::Tcp(host, port) => Box::new(tcp(host, *port).await?),
            ConnectionAddr::TcpTls { host, port, .. } => {
                let tcp = tcp(host, *port).await?;
                let Some(connector) = &self.tls else {
                    return Err("internal: no TLS settings".into());
                };
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|_| format!("{host} is not a server name"))?;
                Box::new(
                    connector
                        .connect(name, tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))?,
                )
            }
            ConnectionAddr::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
            _ => return Err("this kind of address is not supported".into()),
        };
        Ok(Bounded::new(stream))
    }
}

pub const CLUSTER_REFUSED: &str = "is a Redis Cluster node, which is not supported (a call's \
    limits are keys in several hash slots): use one primary, with replicas and Sentinel for \
    failover";

/// A stream the connection can run on.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, String> {
    let stream = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Asks each Sentinel in turn where the primary of `service` is; the first that knows wins
/// (the primary's own ROLE is checked after connecting).
async fn primary_of(nodes: &[(String, u16)], service: &str) -> Result<ConnectionAddr, String> {
    let mut why = String::from("no Sentinel answered");
    for (host, port) in nodes {
        let asked = async {
            let stream: Box<dyn Io> = Box::new(tcp(host, *port).await?);
            let info = RedisConnectionInfo::default().set_skip_set_lib_name();
            let (mut connection, driver) = MultiplexedConnection::new_with_config(
                &info,
                Bounded::new(stream),
                AsyncConnectionConfig::new(),
            )
            .await
            .map_err(|e| super::one_line(&e))?;
            let driver = tokio::spawn(driver);
            let answer: Result<Option<(String, u16)>, String> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(service)
                .query_async(&mut connection)
                .await
                .map_err(|e| super::one_line(&e));
            driver.abort();
            answer?.ok_or_else(|| format!("Sentinel knows no service {service:?}"))
        };
        match asked.await {
            Ok((host, port)) => return Ok(ConnectionAddr::Tcp(host, port)),
            Err(e) => why = format!("Sentinel {host}:{port}: {e}"),
        }
    }
    Err(why)
}

/// The target and the connection's settings (database, user name) of a state URL: `redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]`
/// (also `valkey+sentinel://`), or any URL redis-rs reads (`redis://`, `rediss://`, `unix://`).
fn target(url: &str) -> Result<(Target, RedisConnectionInfo)> {
    if let Some(rest) = sentinel_rest(url) {
        let (nodes, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut parsed = Vec::new();
        for node in nodes.split(',') {
            let (host, port) = node
                .rsplit_once(':')
                .with_context(|| format!("Sentinel {node:?} is not HOST:PORT"))?;
            let port: u16 = port
                .parse()
                .with_context(|| format!("Sentinel {node:?}: the port is not a number"))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains('@') {
                bail!("Sentinel {node:?} is not HOST:PORT");
            }
            parsed.push((host.to_owned(), port));
        }
        let mut parts = path.split('/').filter(|p| !p.is_empty());
        let Some(service) = parts.next() else {
            bail!("a Sentinel URL names its service: redis+sentinel://HOST:PORT/SERVICE[/DB]");
        };
        let db = match parts.next() {
            Some(db) => db.parse().context("the database is not a number")?,
            None => 0,
        };
        if parts.next().is_some() {
            bail!("a Sentinel URL is redis+sentinel://HOST:PORT[,HOST:PORT…]/SERVICE[/DB]");
        }
        let service = service.to_owned();
        return Ok((
            Target::Sentinel {
                nodes: parsed,
                service,
            },
            RedisConnectionInfo::default().set_db(db),
        ));
    }
    let info = url.into_connection_info()?;
    Ok((
        Target::Direct(info.addr().clone()),
        info.redis_settings().clone(),
    ))
}

/// What follows `redis+sentinel://` (or `valkey+sentinel://`).
pub fn sentinel_rest(url: &str) -> Option<&str> {
    url.strip_prefix("redis+sentinel://")
        .or_else(|| url.strip_prefix("valkey+sentinel://"))
}

/// Checks a Sentinel URL's form (for `check` and the settings).
pub fn check_sentinel_url(url: &str) -> Result<()> {
    target(url).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_urls() {
        let (parsed, info) = target("redis+sentinel://127.0.0.1:26379,[::1]:26380/otp/2").unwrap();
        assert_eq!(info.db(), 2);
        match parsed {
            Target::Sentinel { nodes, service } => {
                assert_eq!(service, "otp");
                assert_eq!(nodes, [("127.0.0.1".into(), 26379), ("::1".into(), 26380)]);
            }
            Target::Direct(_) => panic!("not a sentinel target"),
        }
        for bad in [
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1/otp",
            "redis+sentinel://h:x/otp",
            "redis+sentinel://u:p@h:1/otp",
            "redis+sentinel://h:1/otp/x",
        ] {
            assert!(target(bad).is_err(), "{bad}");
        }
        let (_, info) = target("redis://otp@127.0.0.1:6379/3").unwrap();
        assert_eq!((info.db(), info.username()), (3, Some("otp")));
    }
}
