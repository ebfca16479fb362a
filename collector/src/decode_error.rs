//! What an agent is told when its stream carries a message the collector cannot decode.
//!
//! tonic reports an unparsable protobuf as `INTERNAL` (the gRPC convention for a peer's parse
//! error) and an over-long message as `OUT_OF_RANGE`; for an agent both are its own fault, so
//! they become `INVALID_ARGUMENT` and `RESOURCE_EXHAUSTED` with a message naming the limit. Only
//! that stream ends; other agents' streams are separate tasks and never see it.

use tonic::{Code, Status};

use crate::ingest::MAX_DECODE_BYTES;

/// The status to end a stream with after `status` came from reading it.
pub fn describe(status: Status) -> Status {
    let message = status.message();
    match status.code() {
        Code::Internal if message.starts_with("failed to decode Protobuf message") => {
            Status::invalid_argument(format!(
                "a message on this stream is not a valid sensor.v1.DeviationBatch ({message}); \
                 stream closed"
            ))
        }
        Code::OutOfRange if message.contains("message length too large") => {
            Status::resource_exhausted(format!(
                "a message on this stream is larger than the {MAX_DECODE_BYTES} bytes the \
                 collector decodes ({message}); stream closed"
            ))
        }
        _ => status,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_errors_become_the_agents_fault() {
        let s = describe(Status::internal(
            "failed to decode Protobuf message: invalid wire type",
        ));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("invalid wire type"), "{s:?}");
        let s = describe(Status::out_of_range(
            "Error, decoded message length too large: found 1 bytes, the limit is: 0 bytes",
        ));
        assert_eq!(s.code(), Code::ResourceExhausted);
        let s = describe(Status::internal("h2 protocol error"));
        assert_eq!(s.code(), Code::Internal, "other errors pass as they are");
    }
}
