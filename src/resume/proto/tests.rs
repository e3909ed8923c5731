use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;

const TOKEN: Token = Token([7; 16]);

/// One end: the engine, its local stream's bytes and what it delivered.
struct Side {
    eng: Engine,
    input: Vec<u8>,
    read: usize,
    eof_read: bool,
    output: Vec<u8>,
    shut: bool,
}

impl Side {
    fn new(input: Vec<u8>, buffer: usize) -> Side {
        Side {
            eng: Engine::new(TOKEN, buffer),
            input,
            read: 0,
            eof_read: false,
            output: Vec::new(),
            shut: false,
        }
    }

    /// One round of every move, each at most `chunk` bytes; bytes written to the carrier go
    /// to `out`, bytes read from it come from `inp`. Returns whether anything moved.
    fn step(&mut self, chunk: usize, out: &mut Wire, inp: &mut VecDeque<u8>) -> bool {
        let mut moved = false;
        // Local -> ring.
        if !self.eof_read {
            let rest = &self.input[self.read..];
            let buf = self.eng.local_read_buf();
            let n = rest.len().min(buf.len()).min(chunk);
            if rest.is_empty() {
                self.eng.local_read(0);
                self.eof_read = true;
                moved = true;
            } else if n > 0 {
                buf[..n].copy_from_slice(&rest[..n]);
                self.eng.local_read(n);
                self.read += n;
                moved = true;
            }
        }
        // Ring -> carrier.
        if self.eng.is_live() && !out.dead {
            let tx = self.eng.transmit();
            let mut bytes: Vec<u8> = tx.to_vec();
            bytes.truncate(chunk);
            if !bytes.is_empty() {
                let n = bytes.len();
                out.write(&bytes);
                self.eng.transmitted(n);
                moved = true;
            }
        }
        // Carrier -> engine.
        if self.eng.is_live() && !inp.is_empty() {
            let buf = self.eng.carrier_read_buf();
            let n = buf.len().min(inp.len()).min(chunk);
            if n > 0 {
                for (slot, b) in buf[..n].iter_mut().zip(inp.drain(..n)) {
                    *slot = b;
                }
                self.eng.carrier_read(n).expect("honest frames");
                moved = true;
            }
        }
        // Engine -> local.
        let d = self.eng.deliverable().to_vec();
        let n = d.len().min(chunk);
        if n > 0 {
            self.output.extend_from_slice(&d[..n]);
            self.eng.delivered(n).expect("honest frames");
            moved = true;
        } else if self.eng.should_shutdown_local() {
            self.eng.local_shut();
            self.shut = true;
            moved = true;
        }
        moved
    }
}

/// One direction of a carrier: passes `budget` bytes, then the carrier dies.
struct Wire {
    bytes: VecDeque<u8>,
    budget: Option<usize>,
    dead: bool,
}

impl Wire {
    fn new(budget: Option<usize>) -> Wire {
        Wire {
            bytes: VecDeque::new(),
            budget,
            dead: false,
        }
    }

    fn write(&mut self, data: &[u8]) {
        let pass = match &mut self.budget {
            Some(b) => {
                let pass = data.len().min(*b);
                *b -= pass;
                if *b == 0 {
                    self.dead = true;
                }
                pass
            }
            None => data.len(),
        };
        self.bytes.extend(&data[..pass]);
    }
}

fn connect(a: &mut Side, b: &mut Side) {
    let (ha, hb) = (a.eng.hello(), b.eng.hello());
    // Through the wire format, as the driver does.
    let ha = decode_hello(&encode_hello(&ha)).unwrap();
    let hb = decode_hello(&encode_hello(&hb)).unwrap();
    a.eng.resume(&hb).expect("honest hello");
    b.eng.resume(&ha).expect("honest hello");
}

fn lose(a: &mut Side, b: &mut Side) {
    a.eng.carrier_lost();
    b.eng.carrier_lost();
}

/// Run until both ends are done. Carrier `i` passes `cuts[i]` bytes from a to b (later
/// carriers: unlimited); `chunks` cycles through the sizes of each move. Rounds where
/// nothing moves also send heartbeats (Acks).
fn run(a: &mut Side, b: &mut Side, cuts: &[usize], chunks: &[usize]) -> u32 {
    let mut carriers = 0u32;
    let mut chunk = chunks.iter().copied().cycle();
    'carrier: loop {
        let budget = cuts.get(carriers as usize).copied();
        carriers += 1;
        assert!(carriers < 10_000, "no end");
        connect(a, b);
        let mut ab = Wire::new(budget);
        let mut ba = Wire::new(None);
        let mut idle_rounds = 0;
        let mut rounds = 0u64;
        loop {
            rounds += 1;
            assert!(rounds < 5_000_000, "no end: {}", state(a, b));
            if a.eng.is_done() && b.eng.is_done() {
                return carriers;
            }
            let c = chunk.next().unwrap().max(1);
            let ma = a.step(c, &mut ab, &mut ba.bytes);
            let mb = b.step(c, &mut ba, &mut ab.bytes);
            if ab.dead {
                lose(a, b);
                continue 'carrier;
            }
            if ma || mb {
                idle_rounds = 0;
            } else {
                idle_rounds += 1;
                assert!(idle_rounds < 3, "stuck: {}", state(a, b));
                a.eng.on_idle();
                b.eng.on_idle();
            }
        }
    }
}

fn state(a: &Side, b: &Side) -> String {
    let one = |s: &Side| {
        format!(
            "sent {} acked {} sent_max {} received {} delivered {}",
            s.eng.sent_bytes(),
            s.eng.acked(),
            s.eng.sent_max(),
            s.eng.received(),
            s.output.len()
        )
    };
    format!("a: {}; b: {}", one(a), one(b))
}

fn data(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn check(a: &Side, b: &Side) {
    assert!(b.output == a.input, "a -> b differs: {}", state(a, b));
    assert!(a.output == b.input, "b -> a differs: {}", state(a, b));
    assert!(a.shut && b.shut);
}

#[test]
fn a_stream_without_loss_arrives_whole_and_both_ends_finish() {
    let mut a = Side::new(data(300_000, 1), DEFAULT_TEST_BUFFER);
    let mut b = Side::new(data(5_000, 2), DEFAULT_TEST_BUFFER);
    assert_eq!(run(&mut a, &mut b, &[], &[100_000]), 1);
    check(&a, &b);
    assert_eq!(a.eng.sent_bytes(), 300_000);
    assert_eq!(a.eng.received_bytes(), 5_000);
}

const DEFAULT_TEST_BUFFER: usize = 1 << 20;

#[test]
fn replay_after_a_cut_at_every_position() {
    let a_in = data(40, 3);
    let b_in = data(25, 4);
    // The whole of a's first carrier, once, to know its length.
    let mut a = Side::new(a_in.clone(), 64);
    let mut b = Side::new(b_in.clone(), 64);
    run(&mut a, &mut b, &[], &[7]);
    let total = a.eng.sent_max() as usize + 200;
    for cut in 0..total {
        for chunk in [1, 3, 7, 1000] {
            let mut a = Side::new(a_in.clone(), 64);
            let mut b = Side::new(b_in.clone(), 64);
            run(&mut a, &mut b, &[cut], &[chunk]);
            check(&a, &b);
        }
    }
}

#[test]
fn several_cuts_in_a_row_and_empty_carriers() {
    let mut a = Side::new(data(200_000, 5), 100_000);
    let mut b = Side::new(data(150_000, 6), 100_000);
    let carriers = run(
        &mut a,
        &mut b,
        &[0, 1, 0, 5, 70_000, 3, 0, 65_541],
        &[4096, 9000],
    );
    assert!(carriers >= 9);
    check(&a, &b);
}

#[test]
fn a_duplicate_hello_resumes_again_and_an_older_one_is_refused() {
    let mut a = Side::new(data(10_000, 8), DEFAULT_TEST_BUFFER);
    let mut b = Side::new(data(10_000, 9), DEFAULT_TEST_BUFFER);
    connect(&mut a, &mut b);
    let mut ab = Wire::new(Some(3000));
    let mut ba = Wire::new(None);
    while !ab.dead {
        a.step(500, &mut ab, &mut ba.bytes);
        b.step(500, &mut ba, &mut ab.bytes);
    }
    lose(&mut a, &mut b);
    let old = b.eng.hello();
    assert!(old.received > 0);
    // The same hello twice (a carrier that died before anything moved, then another).
    assert!(a.eng.resume(&old).is_ok());
    a.eng.carrier_lost();
    let replay = a.eng.resume(&old).unwrap();
    assert_eq!(replay, a.eng.sent_max() - old.received);
    b.eng.resume(&a.eng.hello()).unwrap();
    // Everything flows; a's acknowledged position passes the old hello's.
    let mut ab = Wire::new(None);
    let mut ba = Wire::new(None);
    for _ in 0..100 {
        a.step(500, &mut ab, &mut ba.bytes);
        b.step(500, &mut ba, &mut ab.bytes);
        a.eng.on_idle();
        b.eng.on_idle();
    }
    assert!(a.eng.acked() > old.received);
    lose(&mut a, &mut b);
    // The old carrier's hello arriving after the newer one: a position a already dropped.
    let stale = a.eng.resume(&old).unwrap_err();
    assert!(matches!(stale, Fault::Position { received, .. } if received == old.received));
    assert!(!a.eng.is_live());
    run(&mut a, &mut b, &[], &[500]);
    check(&a, &b);
}

#[test]
fn a_full_buffer_stops_reading_the_local_stream_and_loses_nothing() {
    let mut a = Side::new(data(100_000, 10), 1000);
    let mut b = Side::new(Vec::new(), 1000);
    // Without a carrier: the ring fills to its size, then takes nothing more.
    for _ in 0..10 {
        a.step(300, &mut Wire::new(None), &mut VecDeque::new());
    }
    assert_eq!(a.read, 1000);
    assert!(a.eng.local_read_buf().is_empty());
    // With carriers that die now and then, every byte still arrives once, in order.
    run(&mut a, &mut b, &[700, 1, 2500], &[300, 1000, 17]);
    check(&a, &b);
}

#[test]
fn the_buffer_never_holds_more_than_its_size() {
    let mut a = Side::new(data(20_000, 11), 512);
    let mut b = Side::new(data(20_000, 12), 512);
    connect(&mut a, &mut b);
    let mut ab = Wire::new(None);
    let mut ba = Wire::new(None);
    for _ in 0..10_000 {
        a.step(200, &mut ab, &mut ba.bytes);
        b.step(200, &mut ba, &mut ab.bytes);
        for s in [&mut a, &mut b] {
            let held = s.eng.sent_bytes() - s.eng.acked().min(s.eng.sent_bytes());
            assert!(held <= 512, "held {held}");
        }
        if a.eng.is_done() && b.eng.is_done() {
            break;
        }
    }
    check(&a, &b);
}

#[test]
fn another_streams_token_is_refused_and_ours_still_resumes() {
    let mut a = Side::new(data(1000, 13), 4096);
    let mut b = Side::new(data(1000, 14), 4096);
    let stranger = Hello {
        token: Token([8; 16]),
        received: 0,
    };
    assert_eq!(a.eng.resume(&stranger), Err(Fault::WrongToken));
    assert!(!a.eng.is_live());
    assert!(a.eng.transmit().is_empty());
    run(&mut a, &mut b, &[100], &[64]);
    check(&a, &b);
}

#[test]
fn a_peer_lying_about_its_position_is_refused() {
    let mut a = Side::new(data(5000, 15), 8192);
    let mut b = Side::new(data(5000, 16), 8192);
    run(&mut a, &mut b, &[2000], &[250]);
    // After the stream: a sent 5000 bytes and its Fin, all acknowledged.
    let sent = a.eng.sent_max();
    assert_eq!(sent, 5001);
    a.eng.carrier_lost();
    let more = Hello {
        token: TOKEN,
        received: sent + 1,
    };
    assert!(matches!(a.eng.resume(&more), Err(Fault::Position { .. })));
    let less = Hello {
        token: TOKEN,
        received: a.eng.acked() - 1,
    };
    assert!(matches!(a.eng.resume(&less), Err(Fault::Position { .. })));
    // In the middle of a stream: more than was ever put on a carrier.
    let mut a = Side::new(data(5000, 15), 8192);
    let mut b = Side::new(data(5000, 16), 8192);
    connect(&mut a, &mut b);
    let mut ab = Wire::new(Some(1500));
    let mut ba = Wire::new(None);
    while !ab.dead {
        a.step(100, &mut ab, &mut ba.bytes);
        b.step(100, &mut ba, &mut ab.bytes);
    }
    lose(&mut a, &mut b);
    let lie = Hello {
        token: TOKEN,
        received: a.eng.sent_max() + 1,
    };
    let err = a.eng.resume(&lie).unwrap_err();
    assert_eq!(
        err,
        Fault::Position {
            received: lie.received,
            acked: a.eng.acked(),
            sent: a.eng.sent_max()
        }
    );
}

/// Feed raw bytes to a live engine.
fn feed(eng: &mut Engine, bytes: &[u8]) -> Result<(), FrameError> {
    let buf = eng.carrier_read_buf();
    buf[..bytes.len()].copy_from_slice(bytes);
    eng.carrier_read(bytes.len())
}

fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = frame_header(kind, payload.len()).to_vec();
    f.extend_from_slice(payload);
    f
}

#[test]
fn malformed_frames_kill_the_carrier_not_the_stream() {
    let cases: Vec<(Vec<u8>, FrameError)> = vec![
        (frame(9, b""), FrameError::UnknownKind(9)),
        (
            frame_header(DATA, MAX_DATA + 1).to_vec(),
            FrameError::BadLength {
                kind: DATA,
                len: MAX_DATA as u32 + 1,
            },
        ),
        (
            frame(DATA, b""),
            FrameError::BadLength { kind: DATA, len: 0 },
        ),
        (
            frame(PING, b"x"),
            FrameError::BadLength { kind: PING, len: 1 },
        ),
        (
            frame(ACK, &[0; 4]),
            FrameError::BadLength { kind: ACK, len: 4 },
        ),
        (
            frame(ACK, &1u64.to_be_bytes()),
            FrameError::AckOutOfRange {
                ack: 1,
                acked: 0,
                sent: 0,
            },
        ),
        (
            frame(FIN, &3u64.to_be_bytes()),
            FrameError::FinMismatch { at: 3, received: 0 },
        ),
        (
            [frame(FIN, &0u64.to_be_bytes()), frame(DATA, b"late")].concat(),
            FrameError::DataAfterFin,
        ),
        (
            frame(ABORT, &[b'x'; MAX_REASON + 1]),
            FrameError::BadLength {
                kind: ABORT,
                len: MAX_REASON as u32 + 1,
            },
        ),
        (frame(CLOSE, b""), FrameError::EarlyClose),
        (
            frame(CLOSE, b"x"),
            FrameError::BadLength {
                kind: CLOSE,
                len: 1,
            },
        ),
    ];
    for (bytes, want) in cases {
        let mut a = Side::new(data(3000, 17), 4096);
        let mut b = Side::new(data(3000, 18), 4096);
        connect(&mut a, &mut b);
        let before = a.eng.received();
        assert_eq!(feed(&mut a.eng, &bytes), Err(want));
        // The driver drops that carrier; a Fin taken from it stays taken, the rest goes on.
        lose(&mut a, &mut b);
        if a.eng.received() == before {
            run(&mut a, &mut b, &[], &[333]);
            check(&a, &b);
        }
    }
}

#[test]
fn frames_split_anywhere_parse_the_same() {
    let mut a = Side::new(Vec::new(), 4096);
    a.eng
        .resume(&Hello {
            token: TOKEN,
            received: 0,
        })
        .unwrap();
    let stream = [
        frame(DATA, b"hello "),
        frame(PING, b""),
        frame(DATA, b"world"),
        frame(FIN, &11u64.to_be_bytes()),
    ]
    .concat();
    for byte in stream.chunks(1) {
        feed(&mut a.eng, byte).unwrap();
        let d = a.eng.deliverable().to_vec();
        a.output.extend_from_slice(&d);
        a.eng.delivered(d.len()).unwrap();
    }
    assert_eq!(a.output, b"hello world");
    assert!(a.eng.should_shutdown_local());
    assert_eq!(a.eng.received(), 12);
    assert_eq!(a.eng.received_bytes(), 11);
}

#[test]
fn hellos_round_trip_and_other_magic_is_not_ours() {
    let h = Hello {
        token: Token([0x5a; 16]),
        received: u64::MAX - 3,
    };
    let bytes = encode_hello(&h);
    assert_eq!(&bytes[..8], b"PVLRSM2\n");
    assert_eq!(decode_hello(&bytes), Some(h));
    let mut other = bytes;
    other[0] = b'X';
    assert_eq!(decode_hello(&other), None);
}

/// 256 cases in the normal test run; `PVLAUNCH_PROPTEST_CASES` raises it.
fn cases() -> u32 {
    std::env::var("PVLAUNCH_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    /// Random cut points on successive carriers and random chunkings of every move: each far
    /// side receives exactly the bytes sent, and both ends finish.
    #[test]
    fn random_cuts_and_chunkings_deliver_exactly_the_stream(
        a_len in 0usize..200_000,
        b_len in 0usize..20_000,
        buffer in 1usize..300_000,
        cuts in proptest::collection::vec(0usize..150_000, 0..6),
        chunks in proptest::collection::vec(1usize..100_000, 1..8),
        seed in any::<u8>(),
    ) {
        let mut a = Side::new(data(a_len, seed), buffer);
        let mut b = Side::new(data(b_len, seed ^ 0x55), buffer);
        run(&mut a, &mut b, &cuts, &chunks);
        prop_assert!(b.output == a.input);
        prop_assert!(a.output == b.input);
        prop_assert!(a.shut && b.shut);
        prop_assert_eq!(a.eng.sent_bytes(), a_len as u64);
        prop_assert_eq!(a.eng.received_bytes(), b_len as u64);
    }
}
