//! A request over the message limit is `ResourceExhausted`, as grpc-go (containerd, CRI-O)
//! answers it; tonic's decoder says `OutOfRange`, so its answer is rewritten here, on the
//! way out, before any handler ran. Every other answer passes untouched.

use tonic::codegen::http;
use tonic::{Code, Status};

/// The start of tonic's message for a request over `max_decoding_message_size`.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// For `tower::util::MapResponseLayer`: every answer passes through it.
pub fn as_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    rewrite(response.headers_mut());
    response
}

/// Turns tonic's too-large `OutOfRange` (a trailers-only answer: the status is in the
/// headers) into `ResourceExhausted` with a message that says what to do.
fn rewrite(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::OutOfRange || !status.message().starts_with(TONIC_TOO_LARGE) {
        return;
    }
    let found = status
        .message()
        .split("found ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("?");
    let exhausted = Status::resource_exhausted(format!(
        "request of {found} bytes is larger than crisp's limit of {} bytes (16 MiB, as kubelet's): \
         shrink the pod's annotations or labels",
        super::MAX_MESSAGE_BYTES
    ));
    // Replaces grpc-status and grpc-message in place; it fails only on a message that
    // cannot be a header, and this one can.
    let _ = exhausted.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: Status) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        status.add_header(&mut headers).expect("status header");
        headers
    }

    #[test]
    fn tonic_too_large_becomes_resource_exhausted_with_the_size() {
        let mut headers = answer(Status::out_of_range(format!(
            "{TONIC_TOO_LARGE}: found 17825870 bytes, the limit is: 16777216 bytes"
        )));
        rewrite(&mut headers);
        let status = Status::from_header_map(&headers).expect("a status");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.message().contains("17825870 bytes"), "{status:?}");
        assert!(status.message().contains("16777216"), "{status:?}");
    }

    #[test]
    fn other_answers_are_left_alone() {
        for status in [
            Status::out_of_range("some other range"),
            Status::invalid_argument(TONIC_TOO_LARGE),
        ] {
            let mut headers = answer(status.clone());
            rewrite(&mut headers);
            let after = Status::from_header_map(&headers).expect("a status");
            assert_eq!(
                (after.code(), after.message()),
                (status.code(), status.message())
            );
        }
        let mut ok = http::HeaderMap::new();
        rewrite(&mut ok);
        assert!(ok.is_empty());
    }
}
