//! The embeddable screen-pop widget: `/widget` (a page to open or iframe
//! with `?key=`) and `/widget.js` (a script a business app includes).

use axum::Router;
use axum::http::header;
use axum::routing::get;

const SCRIPT: &str = include_str!("widget/widget.js");
const PAGE: &str = include_str!("widget/widget.html");

/// Widget routes.
pub fn router() -> Router {
    Router::new()
        .route(
            "/widget.js",
            get(|| async {
                (
                    [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
                    SCRIPT,
                )
            }),
        )
        .route(
            "/widget",
            get(|| async { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE) }),
        )
}
