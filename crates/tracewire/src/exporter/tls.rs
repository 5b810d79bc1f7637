//! TLS material of an exporter: `OTEL_EXPORTER_OTLP_[SIGNAL_]CERTIFICATE` (extra trusted CA
//! certificates, PEM), `…_CLIENT_CERTIFICATE` and `…_CLIENT_KEY` (a client identity, PEM),
//! read and parsed when `init()` runs.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::{Signal, lookup};
use crate::InitError;
use crate::config::Env;

fn tls_error(variable: &str, message: impl Into<String>) -> InitError {
    InitError::Tls {
        variable: variable.to_owned(),
        message: message.into(),
    }
}

fn read(variable: &str, path: &str) -> Result<Vec<u8>, InitError> {
    std::fs::read(path).map_err(|e| tls_error(variable, format!("cannot read {path:?}: {e}")))
}

/// The system's trusted roots, loaded once per process.
fn native_roots() -> &'static [CertificateDer<'static>] {
    static ROOTS: OnceLock<Vec<CertificateDer<'static>>> = OnceLock::new();
    ROOTS.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The client identity: certificate chain and key, as PEM and parsed.
#[derive(Debug)]
struct ClientIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    chain: Vec<CertificateDer<'static>>,
    key_var: String,
}

/// TLS files of one exporter, read and checked.
#[derive(Debug, Default)]
pub(crate) struct TlsFiles {
    ca_pem: Option<Vec<u8>>,
    ca: Vec<CertificateDer<'static>>,
    identity: Option<ClientIdentity>,
}

impl TlsFiles {
    pub(crate) fn resolve(env: &dyn Env, signal: Signal) -> Result<Self, InitError> {
        let mut files = TlsFiles::default();
        if let Some((var, path)) = lookup(env, signal, "CERTIFICATE") {
            let pem = read(&var, &path)?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| tls_error(&var, format!("{path:?} is not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(tls_error(
                    &var,
                    format!("{path:?} holds no PEM certificate"),
                ));
            }
            files.ca = certs;
            files.ca_pem = Some(pem);
        }
        let cert = lookup(env, signal, "CLIENT_CERTIFICATE");
        let key = lookup(env, signal, "CLIENT_KEY");
        let [cert_var, _] = signal.vars("CLIENT_CERTIFICATE");
        let [key_var, _] = signal.vars("CLIENT_KEY");
        match (cert, key) {
            (None, None) => {}
            (Some((var, _)), None) => {
                return Err(tls_error(
                    &var,
                    format!("a client certificate needs its key: set {key_var} too"),
                ));
            }
            (None, Some((var, _))) => {
                return Err(tls_error(
                    &cert_var,
                    format!("{var} is set but no client certificate is: set {cert_var} too"),
                ));
            }
            (Some((cert_var, cert_path)), Some((key_var, key_path))) => {
                let cert_pem = read(&cert_var, &cert_path)?;
                let key_pem = read(&key_var, &key_path)?;
                let chain = CertificateDer::pem_slice_iter(&cert_pem)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_error(&cert_var, format!("{cert_path:?}: {e}")))?;
                if chain.is_empty() {
                    return Err(tls_error(
                        &cert_var,
                        format!("{cert_path:?} holds no PEM certificate"),
                    ));
                }
                PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
                    tls_error(
                        &key_var,
                        format!("{key_path:?} is not a PEM private key: {e}"),
                    )
                })?;
                files.identity = Some(ClientIdentity {
                    cert_pem,
                    key_pem,
                    chain,
                    key_var,
                });
            }
        }
        // Build the rustls configuration once now, so a key that does not fit its
        // certificate is reported here.
        files.rustls_config()?;
        Ok(files)
    }

    /// The tonic TLS configuration: the system's roots, the extra CA and the identity.
    pub(crate) fn tonic_config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().with_native_roots();
        if let Some(pem) = &self.ca_pem {
            config = config.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some(id) = &self.identity {
            config = config.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
        }
        config
    }

    fn rustls_config(&self) -> Result<rustls::ClientConfig, InitError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(native_roots().iter().cloned());
        for cert in &self.ca {
            roots.add(cert.clone()).map_err(|e| {
                tls_error(
                    "OTEL_EXPORTER_OTLP_CERTIFICATE",
                    format!("not a usable CA certificate: {e}"),
                )
            })?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("OTEL_EXPORTER_OTLP_CERTIFICATE", e.to_string()))?
            .with_root_certificates(roots);
        match &self.identity {
            None => Ok(builder.with_no_client_auth()),
            Some(id) => {
                let key = PrivateKeyDer::from_pem_slice(&id.key_pem)
                    .map_err(|e| tls_error(&id.key_var, e.to_string()))?;
                builder
                    .with_client_auth_cert(id.chain.clone(), key)
                    .map_err(|e| {
                        tls_error(
                            &id.key_var,
                            format!("the key does not fit the client certificate: {e}"),
                        )
                    })
            }
        }
    }

    /// A blocking reqwest client for the HTTP exporters (which run on the SDK's own threads),
    /// speaking rustls with this configuration. Built on a thread of its own: reqwest's
    /// blocking client must not be created inside an async runtime.
    pub(crate) fn http_client(
        &self,
        timeout: Duration,
    ) -> Result<reqwest::blocking::Client, InitError> {
        let config = self.rustls_config()?;
        let built = std::thread::Builder::new()
            .name("tracewire-http-client".into())
            .spawn(move || {
                reqwest::blocking::Client::builder()
                    .tls_backend_preconfigured(config)
                    .timeout(timeout)
                    .build()
            })
            .map_err(|e| InitError::HttpClient(e.to_string()))?
            .join()
            .map_err(|_| InitError::HttpClient("the client builder panicked".into()))?;
        built.map_err(|e| InitError::HttpClient(e.to_string()))
    }
}
