//! A tiny TCP "who are you" exchange for `make demo` (demo/run.sh), run inside a pod's network
//! namespace with `nsenter --net=<pin>`: no container image, just this binary.
//!
//! ```text
//! whoami serve NAME LISTEN_ADDR LIFETIME_SECS   answer every connection, exit after LIFETIME_SECS
//! whoami ask ADDR                                connect once, print what both ends saw
//! ```
//!
//! The server answers `name=NAME addr=<its local address> peer=<the peer address it saw>`, the
//! source address as it arrived at the receiving pod, and logs the same line on stdout. The
//! client prints `local=<its own socket address> remote=ADDR reply=<server line>`, so the driver
//! can compare the address the sender used with the one the receiver saw (no NAT: equal).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

/// How long `ask` waits to connect and for the answer: the peers are namespaces on this machine,
/// so anything slower is a broken path, not a slow one.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["serve", name, listen, lifetime] => serve(name, listen, lifetime),
        ["ask", addr] => ask(addr),
        _ => Err("usage: whoami serve NAME LISTEN_ADDR LIFETIME_SECS | whoami ask ADDR".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("whoami: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(name: &str, listen: &str, lifetime: &str) -> Result<(), String> {
    let lifetime: u64 = lifetime
        .parse()
        .map_err(|e| format!("lifetime {lifetime:?}: {e}"))?;
    let listener = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let local = listener
        .local_addr()
        .map_err(|e| format!("local address of {listen}: {e}"))?;
    // A server the driver forgot (killed driver) must not outlive the demo by much.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(lifetime));
        std::process::exit(0);
    });
    println!("{name} listening on {local}");
    flush();
    for conn in listener.incoming() {
        let mut conn = match conn {
            Ok(c) => c,
            Err(e) => {
                println!("{name}: accept failed: {e}");
                continue;
            }
        };
        let line = match (conn.local_addr(), conn.peer_addr()) {
            (Ok(addr), Ok(peer)) => format!("name={name} addr={addr} peer={peer}"),
            (Err(e), _) | (_, Err(e)) => format!("name={name} error={e}"),
        };
        println!("{line}");
        flush();
        let _ = conn.write_all(format!("{line}\n").as_bytes());
    }
    Ok(())
}

fn ask(addr: &str) -> Result<(), String> {
    let remote: SocketAddr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
    let conn = TcpStream::connect_timeout(&remote, ASK_TIMEOUT)
        .map_err(|e| format!("connect {remote}: {e}"))?;
    conn.set_read_timeout(Some(ASK_TIMEOUT))
        .map_err(|e| format!("read timeout on {remote}: {e}"))?;
    let local = conn
        .local_addr()
        .map_err(|e| format!("local address toward {remote}: {e}"))?;
    let mut reply = String::new();
    BufReader::new(conn.take(4096))
        .read_line(&mut reply)
        .map_err(|e| format!("reading the answer of {remote}: {e}"))?;
    if reply.trim().is_empty() {
        return Err(format!("{remote} closed without an answer"));
    }
    println!("local={local} remote={remote} reply={}", reply.trim());
    Ok(())
}

fn flush() {
    let _ = std::io::stdout().flush();
}
