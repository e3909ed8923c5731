//! The preamble between two pvlaunch processes of one session, before ParaView's stream.
//!
//! ```text
//! acceptor  -> connector   MAGIC, nonce_a (32)
//! connector -> acceptor    MAGIC, nonce_c (32), HMAC(secret, "connector" nonce_a nonce_c)
//! acceptor  -> connector   HMAC(secret, "acceptor" nonce_a nonce_c)
//! ```
//!
//! Each side proves it knows the session's secret without sending it; fresh nonces on both
//! sides make a recorded exchange useless, and the role labels make one side's proof useless
//! as the other's. Tags are compared in constant time (`hmac`'s `verify_slice`). Exactly the
//! preamble's bytes are read: what follows is the peer's stream, untouched.
//!
//! The core is sans-I/O ([`Acceptor`], [`Connector`]); [`accept`] and [`connect`] run it over
//! any tokio stream, and callers bound them with [`PREAMBLE_TIMEOUT`].

use std::io;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Secret;

/// The first bytes of each side's first message: protocol and version.
pub const MAGIC: &[u8; 8] = b"PVLHOP1\n";
/// How long a peer may take to complete the preamble.
pub const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(10);

const NONCE: usize = 32;
const TAG: usize = 32;
/// The acceptor's greeting.
pub const GREETING_LEN: usize = MAGIC.len() + NONCE;
/// The connector's reply.
pub const REPLY_LEN: usize = MAGIC.len() + NONCE + TAG;
/// The acceptor's proof.
pub const PROOF_LEN: usize = TAG;

/// Why a preamble failed.
#[derive(Debug, thiserror::Error)]
pub enum PreambleError {
    #[error("the peer does not speak pvlaunch's hop protocol")]
    NotAHop,
    #[error("the peer does not know the session's key")]
    WrongKey,
    #[error("the peer took longer than {PREAMBLE_TIMEOUT:?} to authenticate")]
    Timeout,
    #[error("the connection failed during authentication: {0}")]
    Io(#[from] io::Error),
}

fn tag(secret: &Secret, role: &[u8], nonce_a: &[u8], nonce_c: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.bytes()).expect("any key length");
    mac.update(b"pvlaunch hop ");
    mac.update(role);
    mac.update(nonce_a);
    mac.update(nonce_c);
    mac
}

fn nonce() -> [u8; NONCE] {
    let mut n = [0u8; NONCE];
    rand::fill(&mut n);
    n
}

/// The accepting side's state.
pub struct Acceptor<'a> {
    secret: &'a Secret,
    nonce: [u8; NONCE],
}

impl<'a> Acceptor<'a> {
    /// A fresh acceptor and the greeting to send.
    pub fn new(secret: &'a Secret) -> (Acceptor<'a>, [u8; GREETING_LEN]) {
        Acceptor::with_nonce(secret, nonce())
    }

    fn with_nonce(secret: &'a Secret, nonce: [u8; NONCE]) -> (Acceptor<'a>, [u8; GREETING_LEN]) {
        let mut greeting = [0u8; GREETING_LEN];
        greeting[..MAGIC.len()].copy_from_slice(MAGIC);
        greeting[MAGIC.len()..].copy_from_slice(&nonce);
        (Acceptor { secret, nonce }, greeting)
    }

    /// Check the connector's reply; on success, the proof to send back.
    pub fn on_reply(self, reply: &[u8; REPLY_LEN]) -> Result<[u8; PROOF_LEN], PreambleError> {
        if &reply[..MAGIC.len()] != MAGIC {
            return Err(PreambleError::NotAHop);
        }
        let nonce_c = &reply[MAGIC.len()..MAGIC.len() + NONCE];
        let their = &reply[MAGIC.len() + NONCE..];
        tag(self.secret, b"connector", &self.nonce, nonce_c)
            .verify_slice(their)
            .map_err(|_| PreambleError::WrongKey)?;
        let ours = tag(self.secret, b"acceptor", &self.nonce, nonce_c).finalize();
        Ok(ours.into_bytes().into())
    }
}

/// The connecting side's state once it has replied.
pub struct Connector<'a> {
    secret: &'a Secret,
    nonce_a: [u8; NONCE],
    nonce_c: [u8; NONCE],
}

impl<'a> Connector<'a> {
    /// Answer the acceptor's greeting.
    pub fn on_greeting(
        secret: &'a Secret,
        greeting: &[u8; GREETING_LEN],
    ) -> Result<(Connector<'a>, [u8; REPLY_LEN]), PreambleError> {
        Connector::with_nonce(secret, greeting, nonce())
    }

    fn with_nonce(
        secret: &'a Secret,
        greeting: &[u8; GREETING_LEN],
        nonce_c: [u8; NONCE],
    ) -> Result<(Connector<'a>, [u8; REPLY_LEN]), PreambleError> {
        if &greeting[..MAGIC.len()] != MAGIC {
            return Err(PreambleError::NotAHop);
        }
        let mut nonce_a = [0u8; NONCE];
        nonce_a.copy_from_slice(&greeting[MAGIC.len()..]);
        let mut reply = [0u8; REPLY_LEN];
        reply[..MAGIC.len()].copy_from_slice(MAGIC);
        reply[MAGIC.len()..MAGIC.len() + NONCE].copy_from_slice(&nonce_c);
        let t = tag(secret, b"connector", &nonce_a, &nonce_c).finalize();
        reply[MAGIC.len() + NONCE..].copy_from_slice(&t.into_bytes());
        Ok((
            Connector {
                secret,
                nonce_a,
                nonce_c,
            },
            reply,
        ))
    }

    /// Check the acceptor's proof.
    pub fn on_proof(self, proof: &[u8; PROOF_LEN]) -> Result<(), PreambleError> {
        tag(self.secret, b"acceptor", &self.nonce_a, &self.nonce_c)
            .verify_slice(proof)
            .map_err(|_| PreambleError::WrongKey)
    }
}

/// Run the accepting side over `stream` (no timeout: see [`accept_within`]).
pub async fn accept<S>(stream: &mut S, secret: &Secret) -> Result<(), PreambleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let (acceptor, greeting) = Acceptor::new(secret);
    stream.write_all(&greeting).await?;
    let mut reply = [0u8; REPLY_LEN];
    read_exactly(stream, &mut reply).await?;
    let proof = acceptor.on_reply(&reply)?;
    stream.write_all(&proof).await?;
    stream.flush().await?;
    Ok(())
}

/// Run the connecting side over `stream` (no timeout: see [`connect_within`]).
pub async fn connect<S>(stream: &mut S, secret: &Secret) -> Result<(), PreambleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut greeting = [0u8; GREETING_LEN];
    read_exactly(stream, &mut greeting).await?;
    let (connector, reply) = Connector::on_greeting(secret, &greeting)?;
    stream.write_all(&reply).await?;
    stream.flush().await?;
    let mut proof = [0u8; PROOF_LEN];
    read_exactly(stream, &mut proof).await?;
    connector.on_proof(&proof)
}

/// [`accept`] bounded by [`PREAMBLE_TIMEOUT`].
pub async fn accept_within<S>(stream: &mut S, secret: &Secret) -> Result<(), PreambleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::time::timeout(PREAMBLE_TIMEOUT, accept(stream, secret))
        .await
        .map_err(|_| PreambleError::Timeout)?
}

/// [`connect`] bounded by [`PREAMBLE_TIMEOUT`].
pub async fn connect_within<S>(stream: &mut S, secret: &Secret) -> Result<(), PreambleError>
where
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::time::timeout(PREAMBLE_TIMEOUT, connect(stream, secret))
        .await
        .map_err(|_| PreambleError::Timeout)?
}

/// `read_exact`, with an early end of stream reported as the peer not speaking the protocol
/// (a probe that connects and closes).
async fn read_exactly<S>(stream: &mut S, buf: &mut [u8]) -> Result<(), PreambleError>
where
    S: AsyncRead + Unpin + ?Sized,
{
    match stream.read_exact(buf).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(PreambleError::NotAHop),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pair() -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
        tokio::io::duplex(1024)
    }

    #[tokio::test]
    async fn both_sides_with_the_key_agree_and_the_stream_follows_untouched() {
        let s = Secret::generate();
        let (mut a, mut c) = pair();
        let s2 = s.clone();
        let acc = tokio::spawn(async move {
            accept(&mut a, &s2).await.unwrap();
            let mut buf = [0u8; 5];
            a.read_exact(&mut buf).await.unwrap();
            a.write_all(b"world").await.unwrap();
            buf
        });
        connect(&mut c, &s).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"world");
        assert_eq!(&acc.await.unwrap(), b"hello");
    }

    #[tokio::test]
    async fn a_wrong_key_fails_on_both_sides() {
        let (mut a, mut c) = pair();
        let acc = tokio::spawn(async move { accept(&mut a, &Secret::generate()).await });
        let con = connect(&mut c, &Secret::generate()).await;
        assert!(matches!(acc.await.unwrap(), Err(PreambleError::WrongKey)));
        // The acceptor closed without a proof.
        assert!(matches!(con, Err(PreambleError::NotAHop)));
    }

    #[tokio::test]
    async fn an_impostor_acceptor_is_found_out_by_the_connector() {
        let s = Secret::generate();
        let (c_end, mut evil) = pair();
        let mut c_end = c_end;
        let evil_task = tokio::spawn(async move {
            // Knows the protocol, not the key.
            let other = Secret::generate();
            let (_, greeting) = Acceptor::new(&other);
            evil.write_all(&greeting).await.unwrap();
            let mut reply = [0u8; REPLY_LEN];
            evil.read_exact(&mut reply).await.unwrap();
            evil.write_all(&[0u8; PROOF_LEN]).await.unwrap();
            evil
        });
        assert!(matches!(
            connect(&mut c_end, &s).await,
            Err(PreambleError::WrongKey)
        ));
        drop(evil_task.await.unwrap());
    }

    #[tokio::test]
    async fn probes_that_close_or_speak_something_else_are_not_hops() {
        let s = Secret::generate();
        let (mut a, c) = pair();
        drop(c);
        assert!(accept(&mut a, &s).await.is_err());
        let (mut a, mut c) = pair();
        let acc = tokio::spawn(async move { accept(&mut a, &s).await });
        let mut g = [0u8; GREETING_LEN];
        c.read_exact(&mut g).await.unwrap();
        // A ParaView client's first bytes, or anything else of the right length.
        c.write_all(&[0x42u8; REPLY_LEN]).await.unwrap();
        assert!(matches!(acc.await.unwrap(), Err(PreambleError::NotAHop)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_peer_times_out() {
        let s = Secret::generate();
        let (mut a, _c) = pair();
        assert!(matches!(
            accept_within(&mut a, &s).await,
            Err(PreambleError::Timeout)
        ));
    }

    #[test]
    fn a_recorded_exchange_is_useless_against_a_fresh_nonce() {
        let s = Secret::generate();
        let (acc1, g1) = Acceptor::with_nonce(&s, [1; NONCE]);
        let (_, reply1) = Connector::with_nonce(&s, &g1, [2; NONCE]).unwrap();
        assert!(acc1.on_reply(&reply1).is_ok());
        // Replaying the reply to a new greeting fails.
        let (acc2, _) = Acceptor::with_nonce(&s, [3; NONCE]);
        assert!(matches!(
            acc2.on_reply(&reply1),
            Err(PreambleError::WrongKey)
        ));
        // The connector's tag is not an acceptor's proof (role labels).
        let (acc3, g3) = Acceptor::with_nonce(&s, [4; NONCE]);
        let (con3, reply3) = Connector::with_nonce(&s, &g3, [5; NONCE]).unwrap();
        let mut forged = [0u8; PROOF_LEN];
        forged.copy_from_slice(&reply3[MAGIC.len() + NONCE..]);
        assert!(con3.on_proof(&forged).is_err());
        let _ = acc3;
    }

    proptest! {
        /// Any single flipped bit of the reply or proof is refused.
        #[test]
        fn every_flipped_bit_is_refused(byte in 0usize..REPLY_LEN, bit in 0u8..8, pbyte in 0usize..PROOF_LEN) {
            let s = Secret::from_bytes([9; 32]);
            let (acc, g) = Acceptor::with_nonce(&s, [7; NONCE]);
            let (con, mut reply) = Connector::with_nonce(&s, &g, [8; NONCE]).unwrap();
            let good = reply;
            reply[byte] ^= 1 << bit;
            let (acc_again, _) = Acceptor::with_nonce(&s, [7; NONCE]);
            prop_assert!(acc_again.on_reply(&reply).is_err());
            let mut proof = acc.on_reply(&good).unwrap();
            proof[pbyte] ^= 1 << bit;
            prop_assert!(con.on_proof(&proof).is_err());
        }
    }
}
