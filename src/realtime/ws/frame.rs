//! WebSocket frames (RFC 6455 §5) as the bridge needs them: frame heads read and written,
//! payloads masked and unmasked, close payloads and text checked. No messages are assembled
//! here: the bridge relays frame by frame, so nothing is held longer than one read.

/// Close codes the bridge sends.
pub const GOING_AWAY: u16 = 1001;
pub const PROTOCOL_ERROR: u16 = 1002;
pub const INVALID_DATA: u16 = 1007;
pub const TOO_BIG: u16 = 1009;
pub const TRY_AGAIN_LATER: u16 = 1013;

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The longest frame head: 2 bytes, a 64-bit length, a masking key.
pub const MAX_HEAD: usize = 14;

/// A frame head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: u8,
    pub mask: Option<[u8; 4]>,
    pub len: u64,
}

impl Head {
    pub fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Reads a frame head from the start of `bytes`: `Ok(None)` while it is incomplete, else the
/// head and its length in bytes. Reserved bits (no extension is ever negotiated), unknown
/// opcodes, fragmented or long control frames and over-long lengths are protocol errors.
pub fn parse_head(bytes: &[u8]) -> Result<Option<(Head, usize)>, u16> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return Err(PROTOCOL_ERROR);
    }
    let fin = first & 0x80 != 0;
    let opcode = first & 0x0F;
    if !matches!(opcode, CONTINUATION | TEXT | BINARY | CLOSE | PING | PONG) {
        return Err(PROTOCOL_ERROR);
    }
    let masked = second & 0x80 != 0;
    let (len, mut at) = match second & 0x7F {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => {
                let mut be = [0u8; 8];
                be.copy_from_slice(b);
                (u64::from_be_bytes(be), 10)
            }
            None => return Ok(None),
        },
        short => (u64::from(short), 2),
    };
    if len >> 63 != 0 {
        return Err(PROTOCOL_ERROR);
    }
    let mask = if masked {
        let Some(key) = bytes.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    let head = Head {
        fin,
        opcode,
        mask,
        len,
    };
    if head.is_control() && (!fin || len > 125) {
        return Err(PROTOCOL_ERROR);
    }
    Ok(Some((head, at)))
}

/// Appends `head` in its shortest encoding.
pub fn write_head(out: &mut Vec<u8>, head: Head) {
    out.push(u8::from(head.fin) << 7 | head.opcode);
    let mask_bit = if head.mask.is_some() { 0x80 } else { 0 };
    match head.len {
        len @ 0..=125 => out.push(mask_bit | len as u8),
        len @ 126..=0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    if let Some(key) = head.mask {
        out.extend_from_slice(&key);
    }
}

/// XORs `data` with `key`, `data` starting `offset` bytes into its frame's payload. Masking
/// and unmasking are the same operation.
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    let key = [
        key[shift],
        key[(shift + 1) % 4],
        key[(shift + 2) % 4],
        key[(shift + 3) % 4],
    ];
    let word = u32::from_ne_bytes(key);
    let mut chunks = data.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, k) in chunks.into_remainder().iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// A whole control frame (payload at most 125 bytes), masked with `mask` when given.
pub fn control(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    write_head(
        out,
        Head {
            fin: true,
            opcode,
            mask,
            len: payload.len() as u64,
        },
    );
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut out[start..], key, 0);
    }
}

/// The payload of a close frame with `code` and `reason`.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// Checks a received close payload: empty, or a code a peer may send and a UTF-8 reason.
/// The error is the close code to answer with.
pub fn check_close(payload: &[u8]) -> Result<(), u16> {
    match payload {
        [] => Ok(()),
        [_] => Err(PROTOCOL_ERROR),
        [high, low, reason @ ..] => {
            let code = u16::from_be_bytes([*high, *low]);
            // 1004-1006 and 1015 are reserved for reporting, never sent (RFC 6455 §7.4.1).
            let sendable = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !sendable {
                return Err(PROTOCOL_ERROR);
            }
            std::str::from_utf8(reason)
                .map(|_| ())
                .map_err(|_| INVALID_DATA)
        }
    }
}

/// UTF-8 checked across the frames of a text message: a character may be split anywhere.
#[derive(Debug, Default)]
pub struct Utf8 {
    /// The start of a character the last chunk ended in.
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8 {
    /// False when `data` (following what came before) cannot be UTF-8.
    pub fn feed(&mut self, mut data: &[u8]) -> bool {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = match self.pending[0] {
                0xC2..=0xDF => 2,
                0xE0..=0xEF => 3,
                _ => 4,
            };
            let take = (need - have).min(data.len());
            self.pending[have..have + take].copy_from_slice(&data[..take]);
            data = &data[take..];
            let filled = have + take;
            match std::str::from_utf8(&self.pending[..filled]) {
                Ok(_) => self.pending_len = 0,
                // Still a valid start, waiting for more.
                Err(e) if e.error_len().is_none() && filled < need => {
                    self.pending_len = filled as u8;
                    return true;
                }
                Err(_) => return false,
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                let tail = &data[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                true
            }
            Err(_) => false,
        }
    }

    /// False when the message ended inside a character. Ready for the next message.
    pub fn finish(&mut self) -> bool {
        let whole = self.pending_len == 0;
        self.pending_len = 0;
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip_in_every_length_encoding() {
        for len in [0u64, 1, 125, 126, 65_535, 65_536, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let head = Head {
                    fin: len % 2 == 0,
                    opcode: BINARY,
                    mask,
                    len,
                };
                let mut bytes = Vec::new();
                write_head(&mut bytes, head);
                assert_eq!(parse_head(&bytes), Ok(Some((head, bytes.len()))));
                for cut in 0..bytes.len() {
                    assert_eq!(parse_head(&bytes[..cut]), Ok(None), "{len} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn bad_heads_are_protocol_errors() {
        let bad: [&[u8]; 5] = [
            &[0x80 | 0x40 | TEXT, 0],                // a reserved bit
            &[0x80 | 0x3, 0],                        // an unknown opcode
            &[PING, 0],                              // a fragmented control frame
            &[0x80 | PING, 126, 0, 200],             // a long control frame
            &[0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1], // a length over 2^63
        ];
        for bytes in bad {
            assert_eq!(parse_head(bytes), Err(PROTOCOL_ERROR), "{bytes:?}");
        }
    }

    #[test]
    fn masking_at_any_offset_matches_byte_by_byte() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..=255).collect();
        for offset in 0..8u64 {
            for len in [0, 1, 3, 4, 5, 17] {
                let mut fast = data[..len].to_vec();
                apply_mask(&mut fast, key, offset);
                let slow: Vec<u8> = data[..len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ key[(offset as usize + i) % 4])
                    .collect();
                assert_eq!(fast, slow, "offset {offset}, len {len}");
            }
        }
    }

    #[test]
    fn close_payloads_are_checked() {
        assert_eq!(check_close(&[]), Ok(()));
        assert_eq!(check_close(&[3]), Err(PROTOCOL_ERROR));
        assert_eq!(check_close(&[0x0f, 0xa1, b'b', b'y', b'e']), Ok(())); // 4001
        assert_eq!(check_close(&1005u16.to_be_bytes()), Err(PROTOCOL_ERROR));
        assert_eq!(check_close(&999u16.to_be_bytes()), Err(PROTOCOL_ERROR));
        assert_eq!(check_close(&[0x03, 0xe8, 0xff]), Err(INVALID_DATA));
    }

    #[test]
    fn utf8_is_checked_across_any_split() {
        let text = "añ€😀z".as_bytes();
        for cut in 0..=text.len() {
            for second_cut in cut..=text.len() {
                let mut utf8 = Utf8::default();
                assert!(utf8.feed(&text[..cut]));
                assert!(utf8.feed(&text[cut..second_cut]));
                assert!(utf8.feed(&text[second_cut..]));
                assert!(utf8.finish(), "cut at {cut} and {second_cut}");
            }
        }
        let mut utf8 = Utf8::default();
        assert!(!utf8.feed(&[0xff]));
        let mut utf8 = Utf8::default();
        assert!(utf8.feed(&[0xe2, 0x82]));
        assert!(!utf8.feed(&[0x41]), "a character cut short");
        let mut utf8 = Utf8::default();
        assert!(utf8.feed(&[0xf0, 0x9f]));
        assert!(!utf8.finish(), "a message ending inside a character");
    }
}
