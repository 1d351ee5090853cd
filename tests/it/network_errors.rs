//! What an operator reads when the platform cannot be reached: the URL and
//! the real cause on the first line, certificates refused at once, a 404
//! that says what `url` means, and plain words for what was being done
//! (issue 12, "Network errors name the URL and the real cause").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dirsync::platform::{PlatformClient, PlatformError};

use crate::support::{capture_logs, config_for, serve_tls, test_pki};

/// Measured: each retry warning said only `error sending request for url`;
/// the cause came 8 s later.
#[tokio::test]
async fn a_refused_connection_names_the_url_and_the_cause_in_every_warning() {
    // A port nothing listens on (bound, then closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let (logs, _guard) = capture_logs();
    let client = PlatformClient::new(config_for(&url, "t")).unwrap();
    let err = client.authenticated_user().await.unwrap_err();
    let first_line = err.to_string();
    let first_line = first_line.lines().next().unwrap_or_default();
    assert!(
        first_line.contains(&format!("127.0.0.1:{port}")) && first_line.contains("refused"),
        "{first_line}"
    );
    assert!(
        first_line.starts_with("checking the token: "),
        "{first_line}"
    );
    let logs = logs.text();
    let warnings: Vec<&str> = logs.lines().filter(|l| l.contains("retrying")).collect();
    assert!(!warnings.is_empty(), "{logs}");
    for w in warnings {
        assert!(
            w.contains("refused") && w.contains(&port.to_string()),
            "{w}"
        );
        assert!(!w.contains("error sending request for url"), "{w}");
    }
}

#[tokio::test]
async fn a_refused_certificate_is_not_retried_and_says_what_to_set() {
    let pki = test_pki();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "never reached" }
    });
    let addr = serve_tls(app, &pki);
    // The client does not trust the test CA.
    let client = PlatformClient::new(config_for(
        &format!("https://localhost:{}", addr.port()),
        "t",
    ))
    .unwrap();
    let err = client.authenticated_user().await.unwrap_err();
    assert!(matches!(err, PlatformError::Certificate { .. }), "{err:?}");
    assert!(!err.is_retryable());
    let text = err.to_string();
    assert!(
        text.contains("certificate") && text.contains("platform.ca_file"),
        "{text}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_404_names_the_url_and_says_api_is_appended() {
    let app = axum::Router::new().fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "no") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let client = PlatformClient::new(config_for(
        &format!("http://127.0.0.1:{}/api", addr.port()),
        "t",
    ))
    .unwrap();
    let err = client.authenticated_user().await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{}/api/api", addr.port()))
            && text.contains("appends /api"),
        "{text}"
    );
    assert!(!text.contains("AuthenticatedUser"), "{text}");
}
