//! The client library: connect to an agent's unix socket and run commands on it.

use super::proto::agent_client::AgentClient;
use super::proto::{ExecRequest, ExitStatus, OutputStream, StdinRequest, exec_event::Event};
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use tonic::Status;
use tonic::transport::{Channel, Endpoint, Uri};

/// A connected client (cheap to clone; clones share the connection).
pub type Client = AgentClient<Channel>;

/// Stdin is sent in messages of at most this size.
const STDIN_CHUNK: usize = 1 << 20;

/// Connects to the agent serving on the unix socket `socket`.
pub async fn connect(socket: impl AsRef<Path>) -> Result<Client, tonic::transport::Error> {
    let socket: PathBuf = socket.as_ref().to_path_buf();
    // The URI is required by the HTTP/2 layer but unused: the connector always dials the socket.
    let channel = Endpoint::from_static("http://wedge-agent.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(AgentClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20))
}

/// How one command ran.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub id: u64,
    /// Host pid of the command, once started.
    pub pid: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub status: ExitStatus,
}

impl Outcome {
    /// Whether the command ran and exited with status 0.
    pub fn success(&self) -> bool {
        self.status.exit_code == Some(0) && !self.status.timed_out && self.status.error.is_empty()
    }
}

/// Runs `request`, feeds it `stdin` (then closes its stdin), and collects its output.
pub async fn run(client: &Client, request: ExecRequest, stdin: Vec<u8>) -> Result<Outcome, Status> {
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut outcome = run_with(client, request, stdin, |stream, data| match stream {
        OutputStream::Stderr => stderr.extend_from_slice(data),
        _ => stdout.extend_from_slice(data),
    })
    .await?;
    outcome.stdout = stdout;
    outcome.stderr = stderr;
    Ok(outcome)
}

/// Runs `request` like [`run`], handing each output chunk to `on_output` as it arrives instead of
/// collecting it. Empty `stdin` (or `request.stdin_closed`) asks the agent to close the command's
/// stdin at its start, which saves the `Stdin` call; otherwise `stdin` is written once the
/// command has started, then closed.
pub async fn run_with(
    client: &Client,
    mut request: ExecRequest,
    stdin: Vec<u8>,
    mut on_output: impl FnMut(OutputStream, &[u8]),
) -> Result<Outcome, Status> {
    request.stdin_closed |= stdin.is_empty();
    let send_stdin = !request.stdin_closed;
    let mut events = client.clone().exec(request).await?.into_inner();
    let mut outcome = Outcome::default();
    let mut writer = None;
    let mut stdin = Some(stdin);
    while let Some(message) = events.message().await? {
        match message.event {
            Some(Event::Accepted(accepted)) => outcome.id = accepted.id,
            Some(Event::Started(started)) => {
                outcome.pid = Some(started.pid);
                if send_stdin {
                    let (client, id, data) =
                        (client.clone(), outcome.id, stdin.take().unwrap_or_default());
                    writer = Some(tokio::spawn(write_stdin(client, id, data)));
                }
            }
            Some(Event::Output(output)) => {
                let stream = OutputStream::try_from(output.stream).unwrap_or(OutputStream::Stdout);
                on_output(stream, &output.data);
            }
            Some(Event::Exited(status)) => {
                outcome.status = status;
                if let Some(writer) = writer {
                    // The command may exit without reading its stdin: a failed write is not an error.
                    let _ = writer.await;
                }
                return Ok(outcome);
            }
            None => {}
        }
    }
    Err(Status::unavailable(
        "the exec stream ended without an exit status",
    ))
}

async fn write_stdin(mut client: Client, id: u64, data: Vec<u8>) -> Result<(), Status> {
    // Never empty: an exec without stdin data has its stdin closed at the start instead.
    let mut chunks = data.chunks(STDIN_CHUNK).peekable();
    while let Some(chunk) = chunks.next() {
        let close = chunks.peek().is_none();
        client
            .stdin(StdinRequest {
                id,
                data: chunk.to_vec(),
                close,
            })
            .await?;
    }
    Ok(())
}
