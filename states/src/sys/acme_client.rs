//! One RFC 8555 issuance with instant-acme: account (from our stored key), order, HTTP-01
//! challenges answered by the local responder or DNS-01 records published through RFC 2136
//! (`dns_challenge`), finalize with a fresh key, download the chain.
//! States are synchronous, instant-acme is async: a current-thread tokio runtime lives for the
//! duration of the issuance only. HTTP goes through reqwest (rustls with ring, the system's
//! roots plus an optional extra CA), so no second TLS stack is linked.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use bytes::Bytes;
use instant_acme::{
    Account, AuthorizationStatus, BodyWrapper, BytesResponse, ChallengeType, HttpClient, Identifier, Key, NewOrder,
    OrderStatus, RetryPolicy,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::sys::challenge::Responder;
use crate::sys::dns_challenge::{DnsSolver, Published};
use crate::sys::x509;

/// The whole issuance, CA round trips and validation included, must end within this.
const DEADLINE: Duration = Duration::from_secs(180);

pub struct Issue<'a> {
    pub directory: &'a str,
    pub names: &'a [String],
    pub email: Option<&'a str>,
    /// PEM of an extra CA to trust for the directory's HTTPS (a private CA).
    pub extra_ca: Option<&'a [u8]>,
    /// The account key, PKCS#8 DER (ECDSA P-256).
    pub account_key: &'a [u8],
    pub solver: Solver<'a>,
}

/// How the CA's challenges are answered.
pub enum Solver<'a> {
    /// HTTP-01 by the local responder on this port (haproxy routes the challenge path there).
    Http { port: u16 },
    /// DNS-01 through the fleet's DNS server: any node can validate a shared name.
    Dns(&'a DnsSolver),
}

/// The challenge answerer of one issuance.
enum Answerer<'a> {
    Http(Responder),
    Dns(&'a DnsSolver, std::sync::Mutex<Vec<Published>>),
}

/// Obtain a certificate: returns the PEM bundle (chain, then the new private key), not yet
/// checked nor written.
pub fn obtain(req: &Issue) -> Result<Vec<u8>> {
    crate::sys::http::install_tls_provider();
    let mut http = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).timeout(Duration::from_secs(30));
    if let Some(pem) = req.extra_ca {
        let certs = reqwest::Certificate::from_pem_bundle(pem).context("cannot read the extra CA (`ca_file`)")?;
        http = http.tls_certs_merge(certs);
    }
    let http = http.build().context("cannot set up the HTTP client")?;
    let answerer = match &req.solver {
        Solver::Http { port } => {
            let responder = Responder::start(*port)?;
            responder.self_check(&req.names[0])?;
            Answerer::Http(responder)
        }
        Solver::Dns(dns) => Answerer::Dns(dns, Default::default()),
    };
    let key = x509::new_key()?;
    let csr = x509::csr(req.names, &key)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let chain = rt.block_on(async {
        tokio::time::timeout(DEADLINE, issue(req, Box::new(Reqwest(http)), &answerer, &csr))
            .await
            .map_err(|_| anyhow!("no certificate within {}s", DEADLINE.as_secs()))?
    });
    // The challenge records go, whatever happened.
    if let Answerer::Dns(dns, published) = &answerer {
        for p in published.lock().unwrap().drain(..) {
            if let Err(e) = dns.withdraw(&p) {
                tracing::warn!("{e:#}");
            }
        }
    }
    let chain = chain?;
    let mut bundle = chain.trim_end().to_string();
    bundle.push('\n');
    bundle.push_str(&key.serialize_pem());
    Ok(bundle.into_bytes())
}

async fn issue(req: &Issue<'_>, http: Box<dyn HttpClient>, answerer: &Answerer<'_>, csr: &[u8]) -> Result<String> {
    let der = PrivatePkcs8KeyDer::from(req.account_key.to_vec());
    let key = Key::from_pkcs8_der(der.clone_key()).context("bad ACME account key")?;
    // newAccount with our key finds the account again or creates it: nothing to keep in sync
    // with the CA (a test CA forgets its accounts on restart).
    let (account, _) = Account::builder_with_http(http)
        .create_from_key((key, PrivateKeyDer::Pkcs8(der)), req.directory.to_string())
        .await
        .with_context(|| format!("cannot register an ACME account with {}", req.directory))?;
    if let Some(email) = req.email {
        let contact = format!("mailto:{email}");
        account.update_contacts(&[&contact]).await.context("cannot set the account's contact")?;
    }
    let ids: Vec<Identifier> = req.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
    let mut order = account.new_order(&NewOrder::new(&ids)).await.context("the CA refused the order")?;

    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => bail!("authorization for {} is {other:?}", authz.identifier()),
        }
        let what = authz.identifier().to_string();
        let (kind, label) = match answerer {
            Answerer::Http(_) => (ChallengeType::Http01, "HTTP-01"),
            Answerer::Dns(..) => (ChallengeType::Dns01, "DNS-01"),
        };
        let mut challenge =
            authz.challenge(kind).ok_or_else(|| anyhow!("the CA offers no {label} challenge for {what}"))?;
        match answerer {
            Answerer::Http(responder) => responder.answer(&challenge.token, challenge.key_authorization().as_str()),
            Answerer::Dns(dns, published) => {
                let name = dns.record_name(&what)?;
                let value = challenge.key_authorization().dns_value();
                // The DNS exchange runs its own runtime: on a thread of its own, not inside this one.
                let p = std::thread::scope(|s| s.spawn(|| dns.publish(&name, &value)).join())
                    .map_err(|_| anyhow!("publishing the DNS-01 record panicked"))??;
                published.lock().unwrap().push(p);
            }
        }
        challenge.set_ready().await.with_context(|| format!("{label} challenge for {what}"))?;
    }

    let status = order.poll_ready(&RetryPolicy::new().timeout(Duration::from_secs(90))).await?;
    if status != OrderStatus::Ready {
        bail!("the order is {status:?}: {}", problems(&mut order).await);
    }
    order.finalize_csr(csr).await.context("the CA refused to finalize the order")?;
    Ok(order.poll_certificate(&RetryPolicy::new().timeout(Duration::from_secs(60))).await?)
}

/// Why validation failed, as the CA says per challenge (what an operator needs: "connection
/// refused on 198.18.0.10:80", "DNS problem"...).
async fn problems(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    if let Some(p) = &order.state().error {
        out.push(p.to_string());
    }
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authz)) = authorizations.next().await {
        if let Ok(state) = authz.refresh().await {
            let who = state.identifier().to_string();
            out.extend(state.challenges.iter().filter_map(|c| c.error.as_ref()).map(|e| format!("{who}: {e}")));
        }
    }
    if out.is_empty() {
        "no reason given".into()
    } else {
        out.join("; ")
    }
}

/// instant-acme's HTTP seam, carried by reqwest.
struct Reqwest(reqwest::Client);

impl HttpClient for Reqwest {
    fn request(
        &self,
        req: http::Request<BodyWrapper<Bytes>>,
    ) -> Pin<Box<dyn Future<Output = Result<BytesResponse, instant_acme::Error>> + Send>> {
        let client = self.0.clone();
        Box::pin(async move {
            let other = |e: reqwest::Error| instant_acme::Error::Other(Box::new(e));
            let req = reqwest::Request::try_from(req.map(reqwest::Body::wrap)).map_err(other)?;
            let rsp = client.execute(req).await.map_err(other)?;
            Ok(BytesResponse::from(http::Response::from(rsp)))
        })
    }
}
