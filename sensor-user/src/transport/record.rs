//! The spool's file format: a magic header, then records of
//! `[payload length: u32 LE][CRC-32 of payload: u32 LE][payload]`, each payload one protobuf
//! `sensor.v1.Deviation`. A record cut short or failing its checksum ends the readable part.

/// First bytes of every spool log file (format version 1).
pub const MAGIC: &[u8; 8] = b"SNSPOOL1";
/// Bytes before a record's payload.
pub const RECORD_HEADER: usize = 8;

/// Appends one record holding `payload` to `out`.
pub fn encode(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payloads are bounded far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The records of a log file's body (after [`MAGIC`]).
pub struct Records<'a> {
    body: &'a [u8],
    offset: usize,
}

impl<'a> Records<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Records { body, offset: 0 }
    }

    /// Bytes of the body made of whole, valid records read so far.
    pub fn valid_len(&self) -> usize {
        self.offset
    }

    /// True when reading stopped before the end of the body (a torn or damaged record).
    pub fn stopped_early(&self) -> bool {
        self.offset < self.body.len()
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = &self.body[self.offset..];
        let header = rest.get(..RECORD_HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
        let payload = rest.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
        if crc32(payload) != crc {
            return None;
        }
        self.offset += RECORD_HEADER + len;
        Some(payload)
    }
}

/// CRC-32 (IEEE 802.3, the zlib/PNG polynomial).
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut bit = 0;
            while bit < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                bit += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn records_round_trip_and_stop_at_a_torn_or_damaged_record() {
        let mut body = Vec::new();
        encode(b"first", &mut body);
        encode(b"", &mut body);
        encode(b"third", &mut body);
        let whole = body.len();
        let read: Vec<&[u8]> = Records::new(&body).collect();
        assert_eq!(read, [&b"first"[..], b"", b"third"]);

        // Torn tail: the last record cut in the middle.
        let mut records = Records::new(&body[..whole - 2]);
        assert_eq!(records.by_ref().count(), 2);
        assert!(records.stopped_early());
        assert_eq!(records.valid_len(), RECORD_HEADER * 2 + 5);

        // A flipped payload byte fails the checksum.
        body[RECORD_HEADER] ^= 0x01;
        let mut records = Records::new(&body);
        assert_eq!(records.by_ref().count(), 0);
        assert!(records.stopped_early());
    }
}
