//! The socket under every session pgplane opens on a target. It does two things tokio-postgres
//! does not:
//! - In plaintext (`sslmode=disable`) it reads the server's messages until authentication ends,
//!   and fails the connection when the server asks for the password in cleartext or as MD5, so
//!   that tokio-postgres never sees the request and never answers it: pgplane answers only
//!   SCRAM. (Over TLS the bytes are encrypted here; there, tokio-postgres's required channel
//!   binding refuses those requests, and SCRAM without binding, before sending anything.)
//! - When the session closes (after its Terminate message), it waits for the server to close
//!   the socket. A PostgreSQL backend keeps its socket open until its process exits, after it
//!   has left `pg_stat_activity` and freed its connection slot (its `socket_close` says so: a
//!   "synchronous close" for clients that care), so the session's permit ([`crate::budget`]) is
//!   not handed to a new session while the old backend still counts on the server.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How long a closing session waits for the server to close its end.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Why the connection was failed before tokio-postgres could answer the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error(
        "the target asked for the admin password in cleartext; pgplane sends it only through \
         SCRAM-SHA-256 (set the server's password_encryption to scram-sha-256, reset the admin \
         role's password and use scram-sha-256 in pg_hba.conf); nothing was sent"
    )]
    Cleartext,
    #[error(
        "the target asked for the admin password as MD5; pgplane sends it only through \
         SCRAM-SHA-256 (set the server's password_encryption to scram-sha-256, reset the admin \
         role's password and use scram-sha-256 in pg_hba.conf); nothing was sent"
    )]
    Md5,
    #[error("the target sent a malformed message during authentication; nothing was sent")]
    Malformed,
}

/// Follows the server's messages until authentication succeeds, and refuses a request for the
/// password in cleartext (`R` code 3) or as MD5 (`R` code 5). Fed the bytes as they arrive, in
/// pieces of any size.
#[derive(Debug, Default)]
pub(crate) struct AuthWatch {
    /// The current message's first bytes: its type, its length and, for `R`, its code.
    header: Vec<u8>,
    /// Bytes of the current message's body still to pass.
    skip: usize,
    done: bool,
}

impl AuthWatch {
    /// Whether authentication has succeeded (nothing more is watched).
    pub(crate) fn done(&self) -> bool {
        self.done
    }

    /// Takes the next bytes from the server; refuses them if they hold a request for a
    /// cleartext or MD5 password.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() && !self.done {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            // An authentication request carries its code after the length.
            let wanted = if self.header.first() == Some(&b'R') { 9 } else { 5 };
            let n = (wanted - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 && self.header[0] == b'R' {
                continue;
            }
            if self.header.len() < wanted {
                break;
            }
            let length = u32::from_be_bytes(self.header[1..5].try_into().expect("four bytes")) as usize;
            if self.header[0] == b'R' {
                let code = u32::from_be_bytes(self.header[5..9].try_into().expect("four bytes"));
                match code {
                    _ if length < 8 => return Err(Refusal::Malformed),
                    0 => self.done = true,
                    3 => return Err(Refusal::Cleartext),
                    5 => return Err(Refusal::Md5),
                    _ => self.skip = length - 8,
                }
            } else {
                if length < 4 {
                    return Err(Refusal::Malformed);
                }
                self.skip = length - 4;
            }
            self.header.clear();
        }
        Ok(())
    }
}

/// A target's socket, as described in the module's header.
pub(crate) struct Wire<S> {
    inner: S,
    /// Set in plaintext, until authentication succeeds.
    watch: Option<AuthWatch>,
    /// Set once the write side is shut down: until when to wait for the server's end.
    closing: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> Wire<S> {
    /// `inner`, its authentication watched when it carries the protocol in plaintext.
    pub(crate) fn new(inner: S, plaintext: bool) -> Self {
        Self { inner, watch: plaintext.then(AuthWatch::default), closing: None }
    }
}

/// The connection's error for a refusal (tokio-postgres keeps it as its source).
fn refused(refusal: Refusal) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, refusal)
}

/// The refusal that failed a connection, if one did (found in tokio-postgres's error chain).
pub(crate) fn refusal_in(error: &(dyn std::error::Error + 'static)) -> Option<Refusal> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refusal) = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<Refusal>())
        {
            return Some(refusal.clone());
        }
        if let Some(refusal) = e.downcast_ref::<Refusal>() {
            return Some(refusal.clone());
        }
        cause = e.source();
    }
    None
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(watch) = &mut this.watch {
            // The bytes are refused before tokio-postgres can decode the request they end.
            if let Err(refusal) = watch.feed(&buf.filled()[before..]) {
                buf.set_filled(before);
                return Poll::Ready(Err(refused(refusal)));
            }
            if watch.done() {
                this.watch = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Shuts the write side down, then reads (and drops) what the server still sends until it
    /// closes its end, or [`CLOSE_WAIT`] has passed.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.closing.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.closing = Some(Box::pin(tokio::time::sleep(CLOSE_WAIT)));
        }
        let mut scratch = [0u8; 512];
        loop {
            if this.closing.as_mut().expect("set above").as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut buf)) {
                Ok(()) if buf.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => continue,
                // A reset or any other failure: the server's end is gone too.
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A backend message: its type, its length and `body`.
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn auth(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut body = code.to_be_bytes().to_vec();
        body.extend_from_slice(rest);
        message(b'R', &body)
    }

    /// Feeds `stream` to a fresh watch in pieces of `piece` bytes.
    fn watch(stream: &[u8], piece: usize) -> (Result<(), Refusal>, bool) {
        let mut w = AuthWatch::default();
        for chunk in stream.chunks(piece) {
            if let Err(e) = w.feed(chunk) {
                return (Err(e), w.done());
            }
        }
        (Ok(()), w.done())
    }

    fn scram_exchange() -> Vec<u8> {
        [
            auth(10, b"SCRAM-SHA-256\0\0"),
            auth(11, b"r=abc,s=c2FsdA==,i=4096"),
            auth(12, b"v=c2lnbmF0dXJl"),
            auth(0, b""),
            message(b'S', b"server_version\x0017\0"),
            // After authentication, nothing is watched: an R-looking byte is data.
            message(b'Z', b"I"),
        ]
        .concat()
    }

    #[test]
    fn scram_passes_in_pieces_of_any_size() {
        for piece in 1..=20 {
            assert_eq!(watch(&scram_exchange(), piece), (Ok(()), true), "pieces of {piece}");
        }
    }

    #[test]
    fn cleartext_and_md5_requests_are_refused_however_they_arrive() {
        let notice = message(b'N', b"SNOTICE\0Mhello\0\0");
        for piece in 1..=12 {
            let cleartext = [notice.clone(), auth(3, b"")].concat();
            assert_eq!(watch(&cleartext, piece), (Err(Refusal::Cleartext), false));
            assert_eq!(watch(&auth(5, b"salt"), piece), (Err(Refusal::Md5), false));
        }
    }

    #[test]
    fn errors_and_unknown_methods_pass_to_tokio_postgres() {
        let error = message(b'E', b"SFATAL\0C28P01\0Mpassword authentication failed\0\0");
        assert_eq!(watch(&error, 3), (Ok(()), false));
        assert_eq!(watch(&auth(7, b""), 2), (Ok(()), false), "GSS: tokio-postgres refuses it itself");
    }

    #[test]
    fn malformed_lengths_are_refused() {
        assert_eq!(watch(&[b'R', 0, 0, 0, 4, 0, 0, 0, 0], 9), (Err(Refusal::Malformed), false));
        assert_eq!(watch(&[b'E', 0, 0, 0, 2], 5), (Err(Refusal::Malformed), false));
    }

    #[test]
    fn a_refusal_is_found_in_an_error_chain() {
        let io = refused(Refusal::Md5);
        assert_eq!(refusal_in(&io), Some(Refusal::Md5));
        assert_eq!(refusal_in(&io::Error::other("x")), None);
    }

    /// tokio-postgres itself, over the watched socket, facing a server that asks for the
    /// password in cleartext: the connection fails and the server receives no password message.
    #[tokio::test]
    async fn tokio_postgres_sends_nothing_to_a_server_asking_for_cleartext() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for code in [3u32, 5] {
            let (client, mut server) = tokio::io::duplex(4096);
            let fake = tokio::spawn(async move {
                let mut startup = [0u8; 4];
                server.read_exact(&mut startup).await.unwrap();
                let mut rest = vec![0u8; u32::from_be_bytes(startup) as usize - 4];
                server.read_exact(&mut rest).await.unwrap();
                server.write_all(&auth(code, if code == 5 { b"salt" } else { b"" })).await.unwrap();
                let mut after = Vec::new();
                let _ = server.read_to_end(&mut after).await;
                after
            });
            let mut config = tokio_postgres::Config::new();
            config.user("admin").password("the-admin-password").dbname("postgres");
            let error = config.connect_raw(Wire::new(client, true), tokio_postgres::NoTls).await.err();
            let error = error.expect("the connection is refused");
            let expected = if code == 3 { Refusal::Cleartext } else { Refusal::Md5 };
            assert_eq!(refusal_in(&error), Some(expected));
            let after = fake.await.unwrap();
            assert!(!after.contains(&b'p'), "no password message: {after:?}");
        }
    }

    #[tokio::test]
    async fn closing_waits_for_the_server_to_close_its_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut server) = tokio::io::duplex(64);
        let mut wire = Wire::new(client, false);
        let closed = tokio::spawn(async move { wire.shutdown().await });
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!closed.is_finished(), "still waiting for the server's end");
        server.write_all(b"bye").await.unwrap();
        drop(server);
        closed.await.unwrap().unwrap();
    }
}
