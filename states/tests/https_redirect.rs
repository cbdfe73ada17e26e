//! A download never follows a redirect from https to plain http: against a local https server
//! (a throwaway CA, trusted through `SSL_CERT_FILE`: alone in this test binary, since it sets
//! the process's environment).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

#[test]
fn a_redirect_from_https_to_http_is_refused() {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, "Test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &issuer).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_cert.pem()).unwrap();
    std::env::set_var("SSL_CERT_FILE", &ca_file);

    // The plain http server the redirect points at: it must never be asked.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    let tls = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_port = tls.local_addr().unwrap().port();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())))
        .unwrap();
    let server = std::thread::spawn(move || {
        let (tcp, _) = tls.accept().unwrap();
        let conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut s = rustls::StreamOwned::new(conn, tcp);
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the client left before asking");
            request.extend_from_slice(&buf[..n]);
        }
        let answer = format!(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{plain_port}/artifact\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(answer.as_bytes()).unwrap();
        s.conn.send_close_notify();
        let _ = s.flush();
    });

    let url = format!("https://127.0.0.1:{tls_port}/artifact");
    let e = format!("{:#}", states::sys::http::get_body(&url, Duration::from_secs(10), 1 << 20).unwrap_err());
    server.join().unwrap();
    assert!(e.contains("refused a redirect") && e.contains("away from https"), "{e}");
    plain.set_nonblocking(true).unwrap();
    assert!(plain.accept().is_err(), "the plain http server was asked");
}
