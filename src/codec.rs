//! The protobuf codec of every sqd gRPC service: prost's, with small initial buffers, and the
//! largest message either side of a session accepts.
//!
//! tonic allocates an encode and a decode buffer of `buffer_size` (8 KiB by default) for each
//! stream and keeps them for the stream's life. A leader holds one long-lived session stream
//! per node whose messages are a few hundred bytes, so at 11,000 nodes the defaults alone are
//! ~170 MiB. The buffers grow when a message needs it (a large `status` reply), in steps of at
//! least `buffer_size` and by doubling.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// Largest gRPC message the leader and nodes accept (hazard 27).
pub(crate) const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// Largest admin request (`add-clients` of a whole fleet in one transaction: ~100 bytes per
/// client). The admin API checks the token before decoding, so only an operator can send it.
pub(crate) const MAX_ADMIN_REQUEST_BYTES: usize = 64 * 1024 * 1024;

/// Initial size of a stream's encode and decode buffers.
const BUFFER_SIZE: usize = 1024;
/// tonic's default: how much encoded data a stream gathers before it yields.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD)
}

#[derive(Debug, Clone)]
pub(crate) struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(settings())
    }
}
