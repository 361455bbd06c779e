//! An HTTP/1.1 connection's socket, shared by hyper and a watch for the client's hang-up.
//!
//! hyper notices that a client left while its answer is being prepared or streamed by reading the
//! socket: every request then makes it reserve a fresh 8 KiB read buffer, since the one the request
//! was read into is still shared with the request's head. With 10,000 requests in flight that is
//! 80 MB more, and what the allocator keeps of it stays resident while the streams last. So hyper is
//! told not to read while it answers (`half_close(true)`), and [`HangUp`] watches the same socket
//! instead: it peeks one byte, which reserves nothing, and resolves when the client has closed it.
//! The connection's task then drops the connection, which cancels the handler and its upstream
//! request, as hyper's own read would have.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

struct Socket {
    tcp: TcpStream,
    /// How many of hyper's reads have completed: bytes that [`HangUp`] peeked are hyper's to take,
    /// and it looks again only after hyper has read.
    reads: AtomicU64,
}

/// hyper's side of the socket: reads and writes as `TcpStream` does them.
pub struct Shared(Arc<Socket>);

/// Splits an accepted connection into hyper's side and the watch for its hang-up.
pub fn watch(tcp: TcpStream) -> (Shared, HangUp) {
    let socket = Arc::new(Socket {
        tcp,
        reads: AtomicU64::new(0),
    });
    (
        Shared(socket.clone()),
        HangUp {
            socket,
            peeked_at: None,
        },
    )
}

impl AsyncRead for Shared {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let s = &*self.0;
        loop {
            ready!(s.tcp.poll_read_ready(cx))?;
            // SAFETY: `try_read_buf` only writes bytes it read into the slice, and exactly those
            // `n` bytes are marked initialised and filled below.
            let mut dst: &mut [MaybeUninit<u8>] = unsafe { buf.unfilled_mut() };
            let want = dst.len();
            let mut short = None;
            // As `TcpStream`'s own read does: a read that fills less than it asked for shows the
            // socket drained, so its readiness is cleared (with the tick from before the read, so a
            // wake-up that came meanwhile is kept) and the next poll (or [`HangUp`]'s peek) waits
            // instead of finding out with a read that fails.
            let read = s.tcp.try_io(Interest::READABLE, || {
                let n = s.tcp.try_read_buf(&mut dst)?;
                if 0 < n && n < want {
                    short = Some(n);
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                Ok(n)
            });
            match (read, short) {
                (Ok(n), _) | (Err(_), Some(n)) => {
                    // SAFETY: the read above initialised the first `n` bytes of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    s.reads.fetch_add(1, Ordering::Relaxed);
                    return Poll::Ready(Ok(()));
                }
                // Readiness was stale; it is cleared, so the next poll waits.
                (Err(e), None) if e.kind() == io::ErrorKind::WouldBlock => {}
                (Err(e), None) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.tcp.poll_write_ready(cx))?;
            match self.0.tcp.try_write(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.0.tcp.poll_write_ready(cx))?;
            match self.0.tcp.try_write_vectored(bufs) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return Poll::Ready(r),
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: the descriptor is this socket's, open for as long as `self.0` holds it.
        let rc = unsafe { libc::shutdown(self.0.tcp.as_raw_fd(), libc::SHUT_WR) };
        Poll::Ready(if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        })
    }
}

/// Resolves when the client has closed its side of the connection (or reset it). Bytes that are
/// waiting (a pipelined request, a body hyper has not read yet) are hyper's: the watch then waits
/// until hyper has read before it looks again, so it never spins on them. Poll it from the task
/// that polls the connection: it relies on that task being woken as hyper works.
pub struct HangUp {
    socket: Arc<Socket>,
    /// hyper's read count when the watch last saw bytes waiting.
    peeked_at: Option<u64>,
}

impl Future for HangUp {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let reads = self.socket.reads.load(Ordering::Relaxed);
        if self.peeked_at == Some(reads) {
            return Poll::Pending;
        }
        let mut byte = [MaybeUninit::<u8>::uninit(); 1];
        let mut buf = ReadBuf::uninit(&mut byte);
        match self.socket.tcp.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
            Poll::Ready(Ok(_)) => {
                self.peeked_at = Some(reads);
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
