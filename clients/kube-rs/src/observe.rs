//! A tower layer on top of the client's own stack that only looks (the counterpart of client-go's
//! WrapTransport observer). kube's `watcher` lists, watches and re-watches on its own and tells
//! the user only about objects and errors; a stream that simply ended, or its own idle timeout,
//! leads to a silent re-watch. This layer is the one place that sees every watch request and how
//! each watch stream ended. Requests and bodies pass through unchanged; TLS, auth, retries and
//! timeouts below it are kube's defaults (`ClientBuilder::try_from(config)` is the stack
//! `Client::try_from(config)` builds).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Value, json};
use tower::{Layer, Service};

use crate::emit::{Fields, emit, error_chain, fields, stopping};

type DynError = dyn StdError + Send + Sync + 'static;

#[derive(Default)]
struct Inner {
    watches_sent: u64,
    /// How the latest watch attempt ended; None while one is open.
    last_end: Option<String>,
    /// Non-watch requests since the last `take_attempts` (status or error of each).
    attempts: Vec<Value>,
}

/// Shared by the layer, every service it wraps and every watch body it hands out.
#[derive(Clone, Default)]
pub struct Observer {
    inner: Arc<Mutex<Inner>>,
}

impl Observer {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// The non-watch requests seen since the previous call. A list that failed once and was
    /// retried inside the library would otherwise look like one clean request.
    pub fn take_attempts(&self) -> Vec<Value> {
        self.with(|i| std::mem::take(&mut i.attempts))
    }

    fn watch_sent(&self, resource_version: Option<&str>) {
        let (rewatch, last_end) = self.with(|i| {
            i.watches_sent += 1;
            (i.watches_sent > 1, i.last_end.take())
        });
        if rewatch {
            let previous = last_end.unwrap_or_else(|| "previous watch still open".to_owned());
            let rv = resource_version.unwrap_or("none");
            emit(
                "reconnect",
                fields([(
                    "reason",
                    json!(format!(
                        "library re-watch from resourceVersion {rv}; previous watch: {previous}"
                    )),
                )]),
            );
        }
    }

    fn set_last_end(&self, how: String) {
        self.with(|i| i.last_end = Some(how));
    }

    fn attempt(&self, outcome: Value) {
        self.with(|i| i.attempts.push(outcome));
    }

    /// A `watch-ended` line (not in the contract's table; the runner ignores it and it stays as
    /// evidence of when and how each stream ended) and the cause for the next reconnect line.
    fn watch_ended(&self, cause: &str, message: String) {
        if !stopping() {
            emit(
                "watch-ended",
                fields([("cause", json!(cause)), ("message", json!(message))]),
            );
        }
        self.set_last_end(message);
    }
}

impl<S> Layer<S> for Observer {
    type Service = Observed<S>;

    fn layer(&self, inner: S) -> Observed<S> {
        Observed {
            inner,
            observer: self.clone(),
        }
    }
}

pub struct Observed<S> {
    inner: S,
    observer: Observer,
}

/// A watch request is a GET with `watch=true` (or `watch=1`) in its query.
pub fn is_watch(uri: &Uri) -> bool {
    query_param(uri, "watch").is_some_and(|v| v == "true" || v == "1")
}

/// One query parameter's raw value. Resource versions and the watch flag need no decoding.
pub fn query_param<'u>(uri: &'u Uri, name: &str) -> Option<&'u str> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for Observed<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Future: Send + 'static,
    S::Error: AsRef<DynError>,
    B: Body + Unpin + Send + 'static,
    B::Error: AsRef<DynError>,
{
    type Response = Response<ObservedBody<B>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let watch = is_watch(req.uri());
        let resource_version = query_param(req.uri(), "resourceVersion").map(str::to_owned);
        if watch {
            self.observer.watch_sent(resource_version.as_deref());
        }
        let observer = self.observer.clone();
        let response = self.inner.call(req);
        Box::pin(async move {
            let resp = match response.await {
                Ok(resp) => resp,
                Err(err) => {
                    let message = error_chain(err.as_ref());
                    if watch {
                        // The library gets this error back and reports it (WatchStartFailed).
                        observer.set_last_end(format!("watch request failed: {message}"));
                    } else {
                        observer.attempt(json!({ "error": message }));
                    }
                    return Err(err);
                }
            };
            let status = resp.status();
            let mut ends = None;
            if !watch {
                observer.attempt(json!({ "status": status.as_u16() }));
            } else if status.is_success() {
                let mut opened: Fields = fields([
                    ("status", json!(status.as_u16())),
                    ("proto", json!(format!("{:?}", resp.version()))),
                ]);
                if let Some(rv) = resource_version {
                    opened.insert("resourceVersion".to_owned(), json!(rv));
                }
                emit("watch-opened", opened);
                ends = Some(observer);
            } else {
                observer.set_last_end(format!("watch request answered {status}"));
            }
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(parts, ObservedBody { inner: body, ends }))
        })
    }
}

/// The response body, unchanged; for an open watch it notes the first end of the stream: EOF
/// (the server closed it cleanly), a read error (the connection broke), or the library dropping
/// it before either (kube's own idle timeout, or a re-list).
pub struct ObservedBody<B> {
    inner: B,
    /// Some while this is an open watch stream whose end has not been noted yet.
    ends: Option<Observer>,
}

impl<B> ObservedBody<B> {
    fn ended(&mut self, cause: &str, message: String) {
        if let Some(observer) = self.ends.take() {
            observer.watch_ended(cause, message);
        }
    }
}

impl<B> Body for ObservedBody<B>
where
    B: Body + Unpin,
    B::Error: AsRef<DynError>,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended("eof", "server ended the watch stream".to_owned()),
            Poll::Ready(Some(Err(err))) => this.ended("read-error", error_chain(err.as_ref())),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        self.ended("client-closed", "the library closed the watch stream".to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_requests_are_told_by_their_query() {
        let watch: Uri = "/api/v1/namespaces/ns/configmaps?&watch=true&timeoutSeconds=290&resourceVersion=42"
            .parse()
            .unwrap();
        let list: Uri = "/api/v1/namespaces/ns/configmaps?&limit=500".parse().unwrap();
        assert!(is_watch(&watch));
        assert!(!is_watch(&list));
        assert_eq!(query_param(&watch, "resourceVersion"), Some("42"));
        assert_eq!(query_param(&list, "resourceVersion"), None);
    }
}
