//! One push over HTTP/1.1: a fresh connection, `POST {prefix}/push.v1.PusherService/Push`
//! with the protobuf body, the status checked. hyper's client connection does the protocol.
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

use super::Endpoint;

/// The Connect protocol's unary call path.
pub const PUSH_PATH: &str = "/push.v1.PusherService/Push";

/// POSTs `body`; Ok when the server answered 2xx within `timeout`.
pub async fn post(to: &Endpoint, body: Vec<u8>, timeout: Duration) -> Result<()> {
    tokio::time::timeout(timeout, post_inner(to, body))
        .await
        .map_err(|_| anyhow!("no answer from {} within {timeout:?}", to.authority))?
}

async fn post_inner(to: &Endpoint, body: Vec<u8>) -> Result<()> {
    let tcp = tokio::net::TcpStream::connect(&to.authority)
        .await
        .with_context(|| format!("connecting to {}", to.authority))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    // The connection is driven beside the request; it ends when the exchange is over.
    let driver = tokio::spawn(conn);
    let req = hyper::Request::post(format!("{}{PUSH_PATH}", to.prefix))
        .header(hyper::header::HOST, &to.authority)
        .header(hyper::header::CONTENT_TYPE, "application/proto")
        .header("Connect-Protocol-Version", "1")
        .header(hyper::header::USER_AGENT, concat!("rtrace/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(Bytes::from(body)))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let text = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    driver.abort();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&text[..text.len().min(300)]).trim().to_owned();
        bail!("{} answered {status}: {text}", to.authority);
    }
    Ok(())
}
