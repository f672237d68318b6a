//! TLS to a `tcp://` engine, as the docker CLI sets it up: `DOCKER_TLS_VERIFY` set (to anything but
//! empty), with `cert.pem`, `key.pem` and `ca.pem` in `DOCKER_CERT_PATH` (else `~/.docker`). The
//! engine's certificate must chain to `ca.pem` and name the endpoint's host; the client presents its
//! own. bollard's client (`engine`), the proxy's upstream connections and the engine-side reaper's
//! link all use it. `DOCKER_TLS` without verification is refused: it would trust any engine.

use crate::Error;
use std::path::PathBuf;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The TLS files of the engine the environment names, when it asks for TLS.
#[derive(Debug, Clone)]
pub struct Tls {
    pub dir: PathBuf,
}

impl Tls {
    /// `DOCKER_TLS_VERIFY` → the files of `DOCKER_CERT_PATH` or `~/.docker`; Err for `DOCKER_TLS`
    /// alone (no verification), which this runner will not do.
    pub fn from_env() -> Result<Option<Tls>, Error> {
        let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
        if !set("DOCKER_TLS_VERIFY") {
            if set("DOCKER_TLS") {
                return Err(Error::Setup(
                    "DOCKER_TLS without DOCKER_TLS_VERIFY would trust any engine; set DOCKER_TLS_VERIFY=1 \
                     with the engine's CA in DOCKER_CERT_PATH/ca.pem"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let dir = std::env::var_os("DOCKER_CERT_PATH")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::home_dir().map(|h| h.join(".docker")))
            .ok_or_else(|| {
                Error::Setup(
                    "DOCKER_TLS_VERIFY is set, but neither DOCKER_CERT_PATH nor a home directory is"
                        .into(),
                )
            })?;
        Ok(Some(Tls { dir }))
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The client configuration: `ca.pem` as the only root, `cert.pem` and `key.pem` as the client's.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, Error> {
        let read = |path: PathBuf| {
            std::fs::read(&path).map_err(Error::io(format!("read {}", path.display())))
        };
        let certs = |path: PathBuf| -> Result<Vec<CertificateDer<'static>>, Error> {
            let bytes = read(path.clone())?;
            CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| {
                    Error::Setup(format!("read the certificates of {}: {e}", path.display()))
                })
        };
        let mut roots = RootCertStore::empty();
        for ca in certs(self.ca())? {
            roots
                .add(ca)
                .map_err(|e| Error::Setup(format!("use {} as a CA: {e}", self.ca().display())))?;
        }
        let key = PrivateKeyDer::from_pem_slice(&read(self.key())?)
            .map_err(|e| Error::Setup(format!("read the key of {}: {e}", self.key().display())))?;
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(certs(self.cert())?, key)
            .map_err(|e| {
                Error::Setup(format!("use {} with its key: {e}", self.cert().display()))
            })?;
        Ok(Arc::new(config))
    }
}

/// The host of `HOST:PORT` (`[V6]:PORT` without its brackets).
pub fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    }
}

/// The name the engine's certificate must carry: the host of `HOST:PORT`.
pub fn server_name(address: &str) -> Result<ServerName<'static>, Error> {
    let host = host_of(address);
    ServerName::try_from(host.to_string()).map_err(|e| {
        Error::Setup(format!(
            "{host} is not a name a TLS certificate can carry: {e}"
        ))
    })
}
