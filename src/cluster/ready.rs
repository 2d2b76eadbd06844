//! Whether a node process just started serves: that very process, not
//! whatever answers at its address.
//!
//! An address can be answered by someone else. Another cluster started on
//! the same addresses answers `/status` with the same node ids and a ring
//! that converged long ago, while the node just started dies of "Address
//! already in use". So a node counts as serving only when its `/status`
//! names its id and the pid that was started (`"pid"`), and a process that
//! exits ends the wait at once, in its own words: the last lines of its
//! log. A node that does not report its pid is taken for itself only when
//! the kernel says its process holds the listening socket there (being
//! alive is not enough: it is alive until its bind fails).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use netns::process::Spawned;

use super::place::Place;
use crate::client::Client;

/// A node process that was started, and where it should answer.
pub struct Started<'a> {
    pub id: &'a str,
    pub addr: SocketAddr,
    pub process: Spawned,
    pub log: Option<&'a Path>,
    /// Where the process lives.
    pub place: &'a Place,
}

/// What one look at a started node found.
pub enum Look {
    /// It answers: its `/status`.
    Serving(serde_json::Value),
    /// Nothing answers yet.
    Silent,
    /// Another process answers at its address (with its pid, if it said).
    Stranger(Option<u64>),
}

impl Started<'_> {
    /// One look; an error, with the end of its log, once the process has
    /// exited. A node that answers as itself is not asked about further:
    /// on a host, asking costs an SSH round trip.
    pub async fn look(&self) -> anyhow::Result<Look> {
        let mut client = Client::new(self.addr).with_timeout(Duration::from_secs(1));
        // Read loosely, not as a typed `Status`: whatever answers here may
        // be another program, or a node that does not report its pid.
        let answer = client
            .send(hyper::Method::GET, "/status", None, bytes::Bytes::new())
            .await
            .ok()
            .filter(|a| a.status.is_success());
        let Some(status) = answer.and_then(|a| a.json().ok()) else {
            self.ensure_running()?;
            return Ok(Look::Silent);
        };
        let pid = status["pid"].as_u64();
        let ours = status["id"] == self.id
            && match pid {
                Some(pid) => pid == u64::from(self.process.pid),
                None => self.listens(),
            };
        if ours {
            return Ok(Look::Serving(status));
        }
        self.ensure_running()?;
        Ok(Look::Stranger(pid))
    }

    /// Waits until the node serves; an error when it exits first, or when
    /// `limit` passes.
    pub async fn wait_serving(&self, limit: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + limit;
        loop {
            let stranger = match self.look().await? {
                Look::Serving(status) => return Ok(status),
                Look::Silent => None,
                Look::Stranger(pid) => Some(pid),
            };
            if Instant::now() >= deadline {
                let instead = match stranger {
                    Some(Some(pid)) => format!("; pid {pid} answers there instead"),
                    Some(None) => "; another process answers there instead".to_owned(),
                    None => String::new(),
                };
                anyhow::bail!(
                    "{} (pid {}) does not answer at {} after {limit:?}{instead}",
                    self.id,
                    self.process.pid,
                    self.addr
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process holds the listening socket at its address, for
    /// a node that does not report its pid (only this machine's kernel can
    /// be asked; on a host, being alive has to do).
    fn listens(&self) -> bool {
        let listens_here = || netns::listener::listens_on(self.process.pid, self.addr);
        self.place.is_alive(self.process) && (self.place.host_name().is_some() || listens_here())
    }

    fn ensure_running(&self) -> anyhow::Result<()> {
        if !self.place.is_alive(self.process) {
            let said = self.log.map_or_else(|| "no log".to_owned(), |log| self.place.last_lines(log));
            anyhow::bail!("{} (pid {}) exited: {said}", self.id, self.process.pid);
        }
        Ok(())
    }
}
