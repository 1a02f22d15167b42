//! One connection: read requests, run each as its own call task (or answer `ping` and
//! `health` at once), write replies as they finish, in one write when several are ready, and
//! write each call's log line only after its reply.

use std::future::Future;
use std::sync::Arc;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::Framed;

use super::open::{Conn, CALLS};
use super::sockets::Stream;
use super::{Limits, Server};
use crate::call::log::CallLog;
use crate::call::Dispatcher;
use crate::error::CallError;
use crate::rpc::{CodecError, Incoming, MsgpackCodec, Request, Response};
use crate::slots::Slot;

/// Read and write buffer each connection starts with; requests are about 60 bytes.
const CONNECTION_BUFFER: usize = 1024;

impl Server {
    /// Waits for the client's first bytes, then serves it. Returns why the connection ended.
    pub(super) async fn serve_connection<S: Stream>(
        &self,
        stream: S,
        limits: &Limits,
        max_frame: usize,
        conn: &Conn,
    ) -> String {
        // An idle client costs only this small future: no buffers, no request state.
        tokio::select! {
            ready = stream.readable() => if let Err(e) = ready { return format!("read failed: {e}") },
            () = sleep_until(limits.idle_timeout.map(|t| Instant::now() + t)) => return "idle".into(),
            () = conn.evicted() => return EVICTED.into(),
            () = self.shutdown.cancelled() => return "shutting down".into(),
        }
        Box::pin(self.serve_requests(stream, limits, max_frame, conn)).await
    }

    /// Reads requests, runs each as its own task, writes replies as they finish (in any
    /// order). Returns why the connection ended.
    ///
    /// Whatever ends the reading — the client closing its side, a bad frame, shutdown, the
    /// connection cap choosing this connection — every call already read is answered first.
    async fn serve_requests<S: Stream>(
        &self,
        stream: S,
        limits: &Limits,
        max_frame: usize,
        conn: &Conn,
    ) -> String {
        let idle_after = |from: Instant| limits.idle_timeout.map(|t| from + t);
        let mut framed =
            Framed::with_capacity(stream, MsgpackCodec::new(max_frame), CONNECTION_BUFFER);
        let mut in_flight: FuturesUnordered<CallTask> = FuturesUnordered::new();
        // A call read while every call slot was taken waits here, in the one line all
        // connections share; this connection reads nothing more until it runs.
        let mut waiting: Option<Waiting> = None;
        let mut reading = true;
        // Why reading stopped, when it was not the client closing its side.
        let mut end: Option<String> = None;
        let mut idle_at = idle_after(Instant::now());
        loop {
            tokio::select! {
                frame = framed.next(), if reading && waiting.is_none() && in_flight.len() < limits.max_in_flight_per_connection => {
                    let value = match frame {
                        Some(Ok(value)) => value,
                        // Read nothing more, answer what is in flight, then close.
                        Some(Err(CodecError::Io(e))) => {
                            reading = false;
                            end = Some(format!("read failed: {e}"));
                            continue;
                        }
                        Some(Err(e)) => {
                            reading = false;
                            end = Some(format!("bad frame: {e}"));
                            continue;
                        }
                        // The client closed its side: answer what is in flight, then close.
                        None => { reading = false; continue; }
                    };
                    let read_at = Instant::now();
                    idle_at = idle_after(read_at);
                    match Incoming::parse(value) {
                        Ok(Incoming::Request(request)) => {
                            // The call's deadline counts from here, whatever it waits for.
                            let arrived = Arrived { request, at: read_at };
                            // Takes the newest settings (a reload applies to the next call).
                            let live = self.shared.load_full();
                            match CallTask::inline(&live.dispatcher, arrived) {
                                Ok(answered) => in_flight.push(answered),
                                Err(arrived) => match CALLS.try_take(live.limits.max_in_flight) {
                                    Some(slot) => in_flight.push(CallTask::spawn(&live.dispatcher, arrived, slot)),
                                    None => waiting = Some(Waiting::new(arrived, live.limits.max_in_flight)),
                                },
                            }
                            conn.active(in_flight.len() + usize::from(waiting.is_some()));
                        }
                        Ok(Incoming::Malformed { msgid, detail }) => {
                            let reply = Response { msgid, outcome: Err(CallError::BadRequest(detail).to_string()) };
                            if let Err(e) = framed.send(reply).await {
                                return format!("write failed: {e}");
                            }
                        }
                        Ok(Incoming::Notification { .. } | Incoming::Response(_)) => {}
                        Err(e) => {
                            reading = false;
                            end = Some(e.to_string());
                        }
                    }
                }
                (arrived, slot) = admitted(&mut waiting), if waiting.is_some() => {
                    // The newest settings, as for a call that found a slot at once.
                    let live = self.shared.load_full();
                    in_flight.push(CallTask::spawn(&live.dispatcher, arrived, slot));
                }
                Some((reply, log)) = in_flight.next(), if !in_flight.is_empty() => {
                    // Replies that are ready together leave in one write; their log lines
                    // are formatted after it (dropping a CallLog writes it). The Vec
                    // allocates only when a second reply joins the write.
                    let mut more_logs = Vec::new();
                    let mut served = reply.served;
                    let mut written = framed.feed(reply.response).await;
                    while written.is_ok() {
                        match in_flight.next().now_or_never() {
                            Some(Some((more, more_log))) => {
                                more_logs.push(more_log);
                                served |= more.served;
                                written = framed.feed(more.response).await;
                            }
                            _ => break,
                        }
                    }
                    if written.is_ok() {
                        written = SinkExt::<Response>::flush(&mut framed).await;
                    }
                    drop((log, more_logs));
                    if let Err(e) = written {
                        return format!("write failed: {e}");
                    }
                    idle_at = idle_after(Instant::now());
                    conn.active(in_flight.len() + usize::from(waiting.is_some()));
                    if served {
                        conn.served();
                    }
                }
                // Shutting down: read nothing more, answer what is in flight.
                () = self.shutdown.cancelled(), if reading => reading = false,
                // Chosen to make room for a newcomer (it had nothing in flight then).
                () = conn.evicted(), if reading => {
                    reading = false;
                    end = Some(EVICTED.into());
                }
                () = sleep_until(idle_at), if reading && in_flight.is_empty() && waiting.is_none() => return "idle".into(),
                else => return end.unwrap_or_else(|| "done".into()),
            }
        }
    }
}

/// Why a connection chosen to make room ended.
pub(super) const EVICTED: &str =
    "closed for a new connection at the connection limit (it had not completed a call)";

/// A reply to write, and whether it makes its connection one that was served.
struct Reply {
    response: Response,
    /// A call other than `ping` and `health`, answered past the caller-token check.
    served: bool,
}

/// A request and when it was read: its deadline starts then.
struct Arrived {
    request: Request,
    at: Instant,
}

/// A call waiting in line for a call slot.
struct Waiting {
    arrived: Arrived,
    slot: std::pin::Pin<Box<dyn Future<Output = Slot<'static>> + Send>>,
}

impl Waiting {
    fn new(arrived: Arrived, max_in_flight: usize) -> Waiting {
        Waiting {
            arrived,
            slot: Box::pin(CALLS.take(max_in_flight)),
        }
    }
}

/// The waiting call and its slot, once it has one; pending while nothing waits.
fn admitted(waiting: &mut Option<Waiting>) -> impl Future<Output = (Arrived, Slot<'static>)> + '_ {
    std::future::poll_fn(move |cx| {
        let Some(w) = waiting.as_mut() else {
            return std::task::Poll::Pending;
        };
        let slot = std::task::ready!(w.slot.as_mut().poll(cx));
        match waiting.take() {
            Some(w) => std::task::Poll::Ready((w.arrived, slot)),
            None => std::task::Poll::Pending,
        }
    })
}

/// Sleeps until `at`, or forever when there is no such time.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One call running on its own task, so that it finishes (and logs) even if its connection
/// goes away, and so that a fault in it cannot touch the connection; or a call answered at
/// once, without a task or a call slot (`ping`, `health`).
enum CallTask {
    Running {
        msgid: rmpv::Integer,
        handle: JoinHandle<(Result<rmpv::Value, CallError>, CallLog)>,
    },
    Answered(Option<(Reply, CallLog)>),
}

impl CallTask {
    /// Answers `ping` and `health` here and now, by a plain function: they never wait for a
    /// call slot, so a health check gets through however busy the daemon is. Any other call
    /// comes back.
    fn inline(dispatcher: &Dispatcher, arrived: Arrived) -> Result<CallTask, Arrived> {
        let Some(result) = dispatcher.probe(&arrived.request) else {
            return Err(arrived);
        };
        let reply = Response {
            msgid: arrived.request.msgid,
            outcome: result.map_err(|e| e.to_string()),
        };
        let reply = Reply {
            response: reply,
            served: false,
        };
        Ok(CallTask::Answered(Some((reply, CallLog::default()))))
    }

    /// Runs the call holding `slot`, which the call gives back when it ends.
    fn spawn(dispatcher: &Arc<Dispatcher>, arrived: Arrived, slot: Slot<'static>) -> CallTask {
        let dispatcher = dispatcher.clone();
        let Arrived { request, at } = arrived;
        let msgid = request.msgid;
        // Boxed: the task moves its future a few times, and a call's state machine (the
        // largest of every method's) is kilobytes; a box moves as a pointer (3.3k of a
        // call's 82.9k instructions were these copies).
        let handle = tokio::spawn(Box::pin(async move {
            let called = dispatcher.call(&request, at).await;
            drop(slot);
            called
        }));
        CallTask::Running { msgid, handle }
    }
}

impl std::future::Future for CallTask {
    /// The reply, and the call's log line to drop once the reply is written.
    type Output = (Reply, CallLog);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let (msgid, handle) = match self.get_mut() {
            CallTask::Running { msgid, handle } => (*msgid, handle),
            // FuturesUnordered polls a finished future no more.
            CallTask::Answered(answered) => {
                return answered
                    .take()
                    .map_or(std::task::Poll::Pending, std::task::Poll::Ready)
            }
        };
        let joined = std::task::ready!(std::pin::Pin::new(handle).poll(cx));
        let (outcome, log, served) = match joined {
            Ok((result, log)) => {
                let served = !matches!(result, Err(CallError::Unauthorized(_)));
                (result.map_err(|e| e.to_string()), log, served)
            }
            Err(e) => {
                tracing::error!("call task failed: {e}");
                let failed = CallError::Internal("the call failed unexpectedly".into());
                (Err(failed.to_string()), CallLog::default(), false)
            }
        };
        let response = Response { msgid, outcome };
        std::task::Poll::Ready((Reply { response, served }, log))
    }
}
