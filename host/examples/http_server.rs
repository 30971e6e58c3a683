//! A tokio HTTP service over tenant-cache: many requests at once, served
//! from a pool of component instances, on ONE executor thread. The
//! capability waits for memcached without blocking it, so a frozen server
//! only delays the requests of its own tenants.
//!
//!   GET    /{tenant}/{key}     200 and the value, or 404
//!   PUT    /{tenant}/{key}     stores the request body: 204
//!   DELETE /{tenant}/{key}     204
//!   POST   /{tenant}/clear     clears the tenant: 204
//!   any failure                503 (memcached) or 400 (the request), with a line of text
//!
//! Run: cargo run --release --example http_server -- 127.0.0.1:11211[,HOST:PORT...] [LISTEN]
//! It prints `listening on ADDRESS` once it accepts requests.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tenant_cache_host::{AsyncTenantCache, Backend, CacheError, Grant, MemcachedOptions, Runtime, RuntimeOptions};

/// Instances waiting for a request; a new one is made when none is free.
struct Instances {
    runtime: Runtime,
    grant: Grant,
    idle: Mutex<Vec<AsyncTenantCache>>,
}

impl Instances {
    async fn checkout(&self) -> anyhow::Result<AsyncTenantCache> {
        let idle = self.idle.lock().expect("pool lock").pop();
        match idle {
            Some(cache) => Ok(cache),
            None => self.runtime.instantiate_async(self.grant.clone()).await,
        }
    }

    fn put_back(&self, cache: AsyncTenantCache) {
        self.idle.lock().expect("pool lock").push(cache);
    }
}

fn reply(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

fn failure(error: CacheError) -> Response<Full<Bytes>> {
    let status = match error {
        CacheError::InvalidInput(_) | CacheError::ValueTooLarge { .. } | CacheError::OverLimit(_) => {
            StatusCode::BAD_REQUEST
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    reply(status, format!("{error}\n"))
}

async fn handle(instances: Arc<Instances>, request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().trim_start_matches('/').to_owned();
    let Some((tenant, key)) = path.split_once('/') else {
        return Ok(reply(StatusCode::NOT_FOUND, "expected /{tenant}/{key}\n"));
    };
    let (tenant, key) = (tenant.to_owned(), key.to_owned());
    let method = request.method().clone();
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(error) => return Ok(reply(StatusCode::BAD_REQUEST, format!("{error}\n"))),
    };
    let mut cache = match instances.checkout().await {
        Ok(cache) => cache,
        Err(error) => return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, format!("{error:#}\n"))),
    };
    let response = match (method, key.as_str()) {
        (Method::GET, _) => match cache.get(&tenant, &key).await {
            Ok(Some(value)) => reply(StatusCode::OK, value),
            Ok(None) => reply(StatusCode::NOT_FOUND, ""),
            Err(error) => failure(error),
        },
        (Method::PUT, _) => match cache.set(&tenant, &key, &body, None).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, ""),
            Err(error) => failure(error),
        },
        (Method::DELETE, _) => match cache.delete(&tenant, &key).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, ""),
            Err(error) => failure(error),
        },
        (Method::POST, "clear") => match cache.clear(&tenant).await {
            Ok(()) => reply(StatusCode::NO_CONTENT, ""),
            Err(error) => failure(error),
        },
        _ => reply(StatusCode::METHOD_NOT_ALLOWED, ""),
    };
    instances.put_back(cache);
    Ok(response)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let servers: Vec<String> = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:11211".into())
        .split(',')
        .map(String::from)
        .collect();
    let listen = args.next().unwrap_or_else(|| "127.0.0.1:8080".into());
    // One executor thread: nothing may block it.
    let executor = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    executor.block_on(async move {
        let backend = Backend::memcached(&servers, MemcachedOptions::default())?;
        let runtime = Runtime::from_bytes(
            tenant_cache_host::COMPONENT,
            RuntimeOptions {
                pooling: true,
                ..Default::default()
            },
        )?;
        let instances = Arc::new(Instances {
            runtime,
            grant: Grant::new(backend, "http-example"),
            idle: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        println!("listening on {}", listener.local_addr()?);
        loop {
            let (stream, _) = listener.accept().await?;
            let instances = instances.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| handle(instances.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
