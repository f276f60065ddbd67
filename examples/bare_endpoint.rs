//! The ceiling for `scripts/load.sh`: an axum endpoint that only reads the body and answers 200,
//! with the same HTTP stack deskbot uses. Usage: `bare_endpoint 127.0.0.1:18182`.

use axum::body::Bytes;
use axum::routing::post;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18182".to_string());
    let app = Router::new().route(
        "/webhooks/zendesk",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
