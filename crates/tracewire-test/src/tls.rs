//! Certificates made for one test run (a CA, a server certificate for `127.0.0.1` and
//! `localhost`, optionally a client certificate), written as PEM files, and the HTTPS accept
//! loop of the OTLP receiver.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

#[derive(Debug)]
pub(crate) struct TestCertificates {
    dir: PathBuf,
    ca_file: PathBuf,
    ca_pem: String,
    server_cert_pem: String,
    server_key_pem: String,
    client: Option<(PathBuf, PathBuf)>,
}

impl Drop for TestCertificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn leaf(
    names: Vec<String>,
    purpose: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().expect("generate key");
    let mut params = CertificateParams::new(names).expect("certificate parameters");
    params.extended_key_usages = vec![purpose];
    let cert = params.signed_by(&key, issuer).expect("sign certificate");
    (cert.pem(), key.serialize_pem())
}

impl TestCertificates {
    pub(crate) fn generate(client: bool) -> Self {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tracewire-otlp-tls-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("certificate directory");

        let ca_key = KeyPair::generate().expect("generate CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tracewire test CA");
        let ca_pem = ca_params.self_signed(&ca_key).expect("self-sign CA").pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let (server_cert_pem, server_key_pem) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, &ca_pem).expect("write CA");
        let client = client.then(|| {
            let (cert, key) = leaf(
                vec!["exporter.test".into()],
                ExtendedKeyUsagePurpose::ClientAuth,
                &issuer,
            );
            let (cert_file, key_file) = (dir.join("client.pem"), dir.join("client-key.pem"));
            std::fs::write(&cert_file, cert).expect("write client certificate");
            std::fs::write(&key_file, key).expect("write client key");
            (cert_file, key_file)
        });
        Self {
            dir,
            ca_file,
            ca_pem,
            server_cert_pem,
            server_key_pem,
            client,
        }
    }

    pub(crate) fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    pub(crate) fn client_cert_file(&self) -> Option<&Path> {
        self.client.as_ref().map(|(cert, _)| cert.as_path())
    }

    pub(crate) fn client_key_file(&self) -> Option<&Path> {
        self.client.as_ref().map(|(_, key)| key.as_path())
    }

    pub(crate) fn tonic_server_config(&self) -> tonic::transport::ServerTlsConfig {
        let config = tonic::transport::ServerTlsConfig::new().identity(
            tonic::transport::Identity::from_pem(&self.server_cert_pem, &self.server_key_pem),
        );
        if self.client.is_some() {
            config.client_ca_root(tonic::transport::Certificate::from_pem(&self.ca_pem))
        } else {
            config
        }
    }

    pub(crate) fn rustls_server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = vec![
            CertificateDer::from_pem_slice(self.server_cert_pem.as_bytes()).expect("server cert"),
        ];
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).expect("key");
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("TLS versions");
        let builder = if self.client.is_some() {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(self.ca_pem.as_bytes()).expect("CA"))
                .expect("CA root");
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .expect("server certificate");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

/// Serves `app` over TLS on `listener` until the task is aborted.
pub(crate) async fn serve_https(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            // A client that does not trust the certificate fails here: nothing to serve.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        });
    }
}
