//! The DNS exchanges bootstrap makes itself (discovery goes through hickory's resolver): a plain
//! query to an authoritative server, and an RFC 2136 update signed with TSIG. Synchronous, on a
//! current-thread tokio runtime made per call (microseconds), because the engine is
//! synchronous. Every exchange is bounded: a dead server costs at most `TIMEOUT`.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};
use hickory_net::proto::op::{DnsRequest, DnsRequestOptions, Message, OpCode, Query, ResponseCode};
use hickory_net::proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_net::proto::rr::{Name, RData, Record, RecordType, TSigner};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::udp::UdpClientStream;
use hickory_net::xfer::{DnsHandle, FirstAnswer};

/// How long one exchange may take, retransmissions included.
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// UDP sends per exchange: one retransmission covers a lost packet without waiting for long.
pub const ATTEMPTS: u8 = 2;

/// Run `f` to completion on a fresh current-thread runtime.
pub fn block_on<F: Future>(f: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    Ok(rt.block_on(f))
}

/// `198.18.0.1:53`, `198.18.0.1` (port 53) or `[2001:db8::1]:53`.
pub fn parse_server(s: &str) -> Result<SocketAddr> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| anyhow!("`{s}` is not a DNS server address like `198.18.0.1:53`"))
}

/// A domain name as given in a role, made absolute (DNS names in bootstrap never go through a
/// search list: the answer must not depend on the node's resolv.conf).
pub fn fqdn(s: &str) -> Result<Name> {
    let mut n = Name::from_ascii(s).map_err(|e| anyhow!("`{s}` is not a domain name: {e}"))?;
    n.set_fqdn(true);
    Ok(n)
}

/// The server did not answer (timeout, unreachable): as opposed to answering with an error.
#[derive(Debug, thiserror::Error)]
#[error("no answer from the DNS server {server}: {reason}")]
pub struct NoAnswer {
    pub server: SocketAddr,
    pub reason: String,
}

/// How long `probe` waits for any answer.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);

/// Whether `server` answers at all, in one round trip (callers probe once per run, before their
/// first exchange with a server): a connected UDP socket hears the ICMP
/// "port unreachable" of a host where nothing listens, so a stopped server is known at once
/// (and said as such) instead of after every retransmission's timeout.
pub async fn probe(server: SocketAddr) -> Result<(), NoAnswer> {
    let no = |reason: String| NoAnswer { server, reason };
    let local: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().expect("address");
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(|e| no(format!("cannot open a socket: {e}")))?;
    socket.connect(server).await.map_err(|e| no(format!("cannot reach it: {e}")))?;
    let mut m = Message::query();
    m.add_query(Query::query(Name::root(), RecordType::SOA));
    let bytes = m.to_vec().map_err(|e| no(e.to_string()))?;
    socket.send(&bytes).await.map_err(|e| no(refused_or(e)))?;
    let mut buf = [0u8; 512];
    match tokio::time::timeout(PROBE_WAIT, socket.recv(&mut buf)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(no(refused_or(e))),
        Err(_) => Err(no(format!("no answer within {PROBE_WAIT:?}"))),
    }
}

fn refused_or(e: std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        "connection refused (nothing listens there: is the DNS server running?)".into()
    } else {
        e.to_string()
    }
}

/// Send `message` to `server` over UDP and return the answer, whatever its response code,
/// with its bytes (for TSIG verification).
pub fn exchange(server: SocketAddr, message: Message) -> Result<(Message, Vec<u8>)> {
    block_on(async move {
        let handle = UdpClientStream::builder(server, TokioRuntimeProvider::default())
            .with_timeout(Some(TIMEOUT))
            .with_max_retries(ATTEMPTS)
            .exchange();
        let mut options = DnsRequestOptions::default();
        options.use_edns = false;
        let answer = handle.send(DnsRequest::new(message, options)).first_answer().await;
        answer.map(|r| r.into_parts()).map_err(|e| NoAnswer { server, reason: e.to_string() })
    })?
    .map_err(Into::into)
}

/// The records of `name`/`rtype` as `server` holds them. The server must be authoritative:
/// a cache would make the state compare against stale data.
pub fn query(server: SocketAddr, name: &Name, rtype: RecordType) -> Result<Vec<Record>> {
    let mut m = Message::query();
    m.add_query(Query::query(name.clone(), rtype));
    m.metadata.recursion_desired = false;
    let (answer, _) = exchange(server, m)?;
    match answer.metadata.response_code {
        ResponseCode::NoError | ResponseCode::NXDomain => {}
        rc => {
            bail!("the DNS server {server} answered {rc} to the query for {name} {rtype} (is it the zone's primary?)")
        }
    }
    if !answer.metadata.authoritative {
        bail!("the DNS server {server} is not authoritative for {name}: point `server` at the zone's primary");
    }
    Ok(answer.answers.into_iter().filter(|r| r.record_type() == rtype && r.name == *name).collect())
}

/// The targets of `name`'s SRV records other than `host`'s, asked of `server` directly and
/// authoritatively: a positive answer that no other member is registered is an empty list.
pub fn other_srv_targets(server: SocketAddr, name: &Name, host: &str) -> Result<Vec<String>> {
    let mine = format!("{host}.");
    Ok(query(server, name, RecordType::SRV)?
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.to_string()),
            _ => None,
        })
        .filter(|t| !t.starts_with(&mine))
        .collect())
}

/// An update message for `zone` carrying `updates` (RFC 2136 section 2.5 records).
pub fn update_message(zone: &Name, updates: Vec<Record>) -> Message {
    let mut m = Message::query();
    m.metadata.op_code = OpCode::Update;
    m.metadata.recursion_desired = false;
    m.add_query(Query::query(zone.clone(), RecordType::SOA));
    m.add_authorities(updates);
    m
}

/// A TSIG signer (hmac-sha256) from the key name and its base64 secret. Errors never quote the
/// secret.
pub fn signer(key_name: &str, secret_b64: &str) -> Result<TSigner> {
    let key = data_encoding::BASE64
        .decode(secret_b64.trim().as_bytes())
        .map_err(|_| anyhow!("the TSIG secret for key `{key_name}` is not valid base64"))?;
    if key.is_empty() {
        bail!("the TSIG secret for key `{key_name}` is empty");
    }
    // A five-minute fudge, as BIND and knot use: tolerates modest clock skew.
    TSigner::new(key, TsigAlgorithm::HmacSha256, fqdn(key_name)?, 300)
        .map_err(|e| anyhow!("cannot use TSIG key `{key_name}`: {e}"))
}

/// Send a signed update; an answer other than NOERROR is an error saying what it means.
///
/// Signed here rather than by the client stream: a server that rejects the key answers
/// unsigned, and the stream would then report only a failed verification instead of the
/// server's reason.
pub fn update(server: SocketAddr, zone: &Name, updates: Vec<Record>, signer: TSigner) -> Result<()> {
    let key = signer.signer_name().clone();
    let mut m = update_message(zone, updates);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let verifier =
        m.finalize(&signer, now).map_err(|e| anyhow!("cannot sign the update with TSIG key `{key}`: {e}"))?;
    let (answer, bytes) = exchange(server, m)?;
    let rc = answer.metadata.response_code;
    let tsig_error = answer.signature().and_then(|s| s.data.error);
    let hint = match (rc, &tsig_error) {
        (ResponseCode::NoError, _) => {
            // The answer must come from someone who holds the key, or the change is unproven.
            if let Some(mut v) = verifier {
                v.verify(&bytes).map_err(|e| {
                    anyhow!("the answer of {server} to the update is not signed with TSIG key `{key}`: {e}")
                })?;
            }
            return Ok(());
        }
        (_, Some(TsigError::BadKey)) => "the server does not know this TSIG key name".to_string(),
        (_, Some(TsigError::BadSig)) => "the TSIG secret does not match the server's".to_string(),
        (_, Some(TsigError::BadTime)) => {
            "the clocks of this node and the server differ by more than 5 minutes".to_string()
        }
        (_, Some(e)) => format!("TSIG error {e:?}"),
        (ResponseCode::Refused, None) => "the server does not allow this key to update this zone".to_string(),
        (ResponseCode::NotAuth, None) => "the server is not authoritative for the zone".to_string(),
        (ResponseCode::NotZone, None) => "the name is not inside the zone".to_string(),
        (_, None) => "see the server's log".to_string(),
    };
    bail!("the DNS server {server} refused the update of zone {zone} with TSIG key `{key}`: {rc} ({hint})")
}
