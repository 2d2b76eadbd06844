//! Mutual authentication of peer connections with the cluster's secret.
//!
//! Anyone who can reach a peer port could otherwise write any replica,
//! join the ring or re-address a member. Before its first frame, each side
//! of a new connection proves it holds the cluster's secret (the admin
//! token every node already has) without sending it: a challenge–response
//! over fresh nonces with a keyed BLAKE3 MAC.
//!
//! ```text
//! dialer → server  MAGIC, dialer nonce                       (20 bytes)
//! server → dialer  server nonce, MAC("server", both nonces)  (48 bytes)
//! dialer → server  MAC("dialer", both nonces)                (32 bytes)
//! ```
//!
//! Each MAC binds both nonces and its role, so no answer can be replayed
//! into another connection or reflected back. A connection is trusted once
//! the handshake succeeds (the test bed's threat is a process that can
//! reach the port, not one that can rewrite a TCP stream in flight). Every
//! message has a fixed size, so a stranger costs the node a few bytes and a
//! bounded wait, never a buffer it chose.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Protocol name and version; also what tells a peer port from anything else.
const MAGIC: [u8; 4] = *b"DYP1";
const NONCE: usize = 16;
const MAC: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("not a dynabed peer (bad greeting)")]
    NotAPeer,
    #[error("the peer does not hold the cluster's secret")]
    BadProof,
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

    fn mac(&self, role: &[u8], dialer: &[u8; NONCE], server: &[u8; NONCE]) -> blake3::Hash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(role).update(dialer).update(server);
        hasher.finalize()
    }
}

/// `blake3::Hash` compares in constant time: a wrong proof tells nothing
/// about the right one.
fn proves(received: &[u8], expected: blake3::Hash) -> bool {
    <[u8; MAC]>::try_from(received).is_ok_and(|bytes| blake3::Hash::from_bytes(bytes) == expected)
}

/// The dialer's side: run on every new outgoing connection.
pub async fn dial<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, key: &PeerKey) -> Result<(), HandshakeError> {
    let dialer: [u8; NONCE] = rand::random();
    let mut hello = [0u8; MAGIC.len() + NONCE];
    hello[..MAGIC.len()].copy_from_slice(&MAGIC);
    hello[MAGIC.len()..].copy_from_slice(&dialer);
    stream.write_all(&hello).await?;
    let mut answer = [0u8; NONCE + MAC];
    stream.read_exact(&mut answer).await?;
    let server: [u8; NONCE] = answer[..NONCE].try_into().expect("fixed size");
    if !proves(&answer[NONCE..], key.mac(b"server", &dialer, &server)) {
        return Err(HandshakeError::BadProof);
    }
    stream.write_all(key.mac(b"dialer", &dialer, &server).as_bytes()).await?;
    Ok(())
}

/// The server's side: run on every accepted connection before any frame.
pub async fn accept<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, key: &PeerKey) -> Result<(), HandshakeError> {
    let mut hello = [0u8; MAGIC.len() + NONCE];
    stream.read_exact(&mut hello).await?;
    if hello[..MAGIC.len()] != MAGIC {
        return Err(HandshakeError::NotAPeer);
    }
    let dialer: [u8; NONCE] = hello[MAGIC.len()..].try_into().expect("fixed size");
    let server: [u8; NONCE] = rand::random();
    let mut answer = [0u8; NONCE + MAC];
    answer[..NONCE].copy_from_slice(&server);
    answer[NONCE..].copy_from_slice(key.mac(b"server", &dialer, &server).as_bytes());
    stream.write_all(&answer).await?;
    let mut proof = [0u8; MAC];
    stream.read_exact(&mut proof).await?;
    if !proves(&proof, key.mac(b"dialer", &dialer, &server)) {
        return Err(HandshakeError::BadProof);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(dialer_secret: Option<&str>, server_secret: Option<&str>) -> (Result<(), String>, Result<(), String>) {
        let (mut a, mut b) = tokio::io::duplex(256);
        let (dk, sk) = (PeerKey::new(dialer_secret), PeerKey::new(server_secret));
        // Each side closes its end when done, as a real connection would.
        let (dialed, accepted) = tokio::join!(
            async move {
                let result = dial(&mut a, &dk).await;
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
    async fn peers_with_the_same_secret_trust_each_other() {
        assert_eq!(run(Some("s3cret"), Some("s3cret")).await, (Ok(()), Ok(())));
        assert_eq!(run(None, None).await, (Ok(()), Ok(())));
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
            a.write_all(&[0x42; MAC]).await.unwrap();
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
