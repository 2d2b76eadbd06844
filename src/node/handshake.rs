//! Mutual authentication of peer connections with the cluster's secret.
//!
//! Anyone who can reach a peer port could otherwise write any replica,
//! join the ring or re-address a member. Before its first frame, each side
//! of a new connection proves it holds the cluster's secret (the admin
//! token every node already has) without sending it: a challenge–response
//! over fresh nonces with a keyed BLAKE3 MAC.
//!
//! ```text
//! dialer → server  MAGIC, dialer nonce                             (20 bytes)
//! server → dialer  server nonce, MAC("server", both nonces)        (48 bytes)
//! dialer → server  MAC("dialer", both nonces, name), length, name  (33 + 1..=255 bytes)
//! ```
//!
//! Each MAC binds both nonces and its role, so no answer can be replayed
//! into another connection or reflected back. The dialer also names itself
//! (its node id, bound into its MAC): the server learns which member sends
//! what it receives on the connection, which the connection's address
//! cannot tell when several nodes share one (every node of a loopback
//! cluster is on 127.0.0.1). A connection is trusted once
//! the handshake succeeds (the test bed's threat is a process that can
//! reach the port, not one that can rewrite a TCP stream in flight). Every
//! message has a fixed size, so a stranger costs the node a few bytes and a
//! bounded wait, never a buffer it chose.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol name and version; also what tells a peer port from anything else.
const MAGIC: [u8; 4] = *b"DYP2";
const NONCE: usize = 16;
const MAC: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a dynabed peer (bad greeting)")]
    NotAPeer,
    #[error("the peer does not hold the cluster's secret")]
    BadProof,
    #[error("a node id of {0} bytes is too long for the peer handshake (at most 255)")]
    NameTooLong(usize),
    #[error("handshake: {0}")]
    Io(#[from] std::io::Error),
}

/// The key both sides derive from the cluster's secret.
#[derive(Clone)]
pub struct PeerKey([u8; 32]);

impl PeerKey {
    /// With no secret (a node started with `--seeds` and no meta file) the
    /// key is public and the handshake only keeps out strangers to the
    /// protocol; the node warns about it at startup.
    pub fn new(secret: Option<&str>) -> PeerKey {
        PeerKey(blake3::derive_key("dynabed peer handshake v1", secret.unwrap_or_default().as_bytes()))
    }

    fn mac(&self, role: &[u8], dialer: &[u8; NONCE], server: &[u8; NONCE], name: &[u8]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(role).update(dialer).update(server).update(name);
        hasher.finalize()
    }
}

/// `blake3::Hash` compares in constant time: a wrong proof tells nothing
/// about the right one.
fn proves(received: &[u8], expected: blake3::Hash) -> bool {
    <[u8; MAC]>::try_from(received).is_ok_and(|bytes| blake3::Hash::from_bytes(bytes) == expected)
}

/// The dialer's side: run on every new outgoing connection by the node
/// called `name`.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
    name: &str,
) -> Result<(), HandshakeError> {
    let length = u8::try_from(name.len()).map_err(|_| HandshakeError::NameTooLong(name.len()))?;
    let dialer: [u8; NONCE] = rand::random();
    let mut hello = [0u8; MAGIC.len() + NONCE];
    hello[..MAGIC.len()].copy_from_slice(&MAGIC);
    hello[MAGIC.len()..].copy_from_slice(&dialer);
    stream.write_all(&hello).await?;
    let mut answer = [0u8; NONCE + MAC];
    stream.read_exact(&mut answer).await?;
    let server: [u8; NONCE] = answer[..NONCE].try_into().expect("fixed size");
    if !proves(&answer[NONCE..], key.mac(b"server", &dialer, &server, b"")) {
        return Err(HandshakeError::BadProof);
    }
    let proof = key.mac(b"dialer", &dialer, &server, name.as_bytes());
    stream.write_all(&[proof.as_bytes(), &[length][..], name.as_bytes()].concat()).await?;
    Ok(())
}

/// The server's side: run on every accepted connection before any frame;
/// answers the name the dialer proved.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    key: &PeerKey,
) -> Result<String, HandshakeError> {
    let mut hello = [0u8; MAGIC.len() + NONCE];
    stream.read_exact(&mut hello).await?;
    if hello[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let dialer: [u8; NONCE] = hello[MAGIC.len()..].try_into().expect("fixed size");
    let server: [u8; NONCE] = rand::random();
    let mut answer = [0u8; NONCE + MAC];
    answer[..NONCE].copy_from_slice(&server);
    answer[NONCE..].copy_from_slice(key.mac(b"server", &dialer, &server, b"").as_bytes());
    stream.write_all(&answer).await?;
    let mut proof = [0u8; MAC + 1];
    stream.read_exact(&mut proof).await?;
    let mut name = vec![0u8; usize::from(proof[MAC])];
    stream.read_exact(&mut name).await?;
    if !proves(&proof[..MAC], key.mac(b"dialer", &dialer, &server, &name)) {
        return Err(HandshakeError::BadProof);
    }
    Ok(String::from_utf8_lossy(&name).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(
        dialer_secret: Option<&str>,
        server_secret: Option<&str>,
    ) -> (Result<(), String>, Result<String, String>) {
        let (mut a, mut b) = tokio::io::duplex(256);
        let (dk, sk) = (PeerKey::new(dialer_secret), PeerKey::new(server_secret));
        // Each side closes its end when done, as a real connection would.
        let (dialed, accepted) = tokio::join!(
            async move {
                let result = dial(&mut a, &dk, "node7").await;
                drop(a);
                result
            },
            async move {
                let result = accept(&mut b, &sk).await;
                drop(b);
                result
            }
        );
        (dialed.map_err(|e| e.to_string()), accepted.map_err(|e| e.to_string()))
    }

    #[tokio::test]
    async fn peers_with_the_same_secret_trust_each_other_and_the_server_learns_the_dialers_name() {
        assert_eq!(run(Some("s3cret"), Some("s3cret")).await, (Ok(()), Ok("node7".into())));
        assert_eq!(run(None, None).await, (Ok(()), Ok("node7".into())));
    }

    #[tokio::test]
    async fn a_name_too_long_to_send_is_refused_before_anything_is_sent() {
        let (mut a, _b) = tokio::io::duplex(256);
        let err = dial(&mut a, &PeerKey::new(None), &"n".repeat(256)).await.unwrap_err();
        assert!(matches!(err, HandshakeError::NameTooLong(256)), "{err}");
    }

    #[tokio::test]
    async fn peers_with_different_secrets_refuse_each_other() {
        let (dialed, accepted) = run(Some("guess"), Some("s3cret")).await;
        assert_eq!(dialed.unwrap_err(), HandshakeError::BadProof.to_string(), "the server's proof fails");
        assert!(accepted.is_err(), "the dialer hangs up instead of proving anything");
    }

    #[tokio::test]
    async fn a_dialer_that_cannot_prove_the_secret_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let stranger = async move {
            a.write_all(&[&MAGIC[..], &[7; NONCE]].concat()).await.unwrap();
            let mut answer = [0u8; NONCE + MAC];
            a.read_exact(&mut answer).await.unwrap();
            a.write_all(&[[0x42; MAC].as_slice(), &[5], b"node1"].concat()).await.unwrap();
            a
        };
        let key = PeerKey::new(Some("s3cret"));
        let (_, accepted) = tokio::join!(stranger, accept(&mut b, &key));
        assert!(matches!(accepted, Err(HandshakeError::BadProof)), "{accepted:?}");
    }

    #[tokio::test]
    async fn bytes_that_are_no_greeting_are_refused_at_once() {
        let (mut a, mut b) = tokio::io::duplex(256);
        // A frame header declaring 16 MiB, as an old peer or a stranger would send.
        a.write_all(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
        let err = accept(&mut b, &PeerKey::new(Some("s3cret"))).await.unwrap_err();
        assert!(matches!(err, HandshakeError::NotAPeer), "{err}");
    }
}
