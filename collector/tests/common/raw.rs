//! A hostile agent's end of `Ingest.StreamDeviations`: byte strings sent as messages whatever
//! they hold (undecodable, oversized), acknowledgements decoded as usual.

use prost::Message as _;
use prost::bytes::BufMut as _;
use proto::v1::BatchAck;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

/// Sends raw bytes as messages of `StreamDeviations`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct AckDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = BatchAck;
    type Encoder = RawEncoder;
    type Decoder = AckDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AckDecoder {
        AckDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for AckDecoder {
    type Item = BatchAck;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<BatchAck>, Status> {
        BatchAck::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(e.to_string()))
    }
}

/// The method's path, for [`tonic::client::Grpc::streaming`] with [`RawCodec`].
pub fn stream_deviations() -> PathAndQuery {
    PathAndQuery::from_static("/sensor.v1.Ingest/StreamDeviations")
}

/// A gRPC client over `channel` that sends messages of any size (the collector is the one to
/// refuse them).
pub fn unlimited(channel: Channel) -> tonic::client::Grpc<Channel> {
    tonic::client::Grpc::new(channel).max_encoding_message_size(usize::MAX)
}
