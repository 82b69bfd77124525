//! Server side of a stream (e.g. a console): STREAM packets that carry the procedure and serial
//! of the call that opened it. Data is status CONTINUE; the server's end of file is an empty
//! CONTINUE (libvirtd's `daemonStreamHandleRead` on EOF), after which the client finishes the
//! stream with an empty OK that the server confirms with an empty OK; an abort is ERROR with a
//! `remote_error`. An OK the client did not ask for is a protocol error to libvirt's client
//! (`virNetClientCallDispatchStream`: "unexpected async stream finish confirmation"), which then
//! drops the whole connection.

use super::connection::{Connection, ConnectionClosed, StreamKey};
use crate::message::{MessageStatus, STREAM_CHUNK_MAX};
use crate::remote_error::RemoteError;
use tokio::sync::{mpsc, watch};

/// A packet the client sent on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamPacket {
    /// Data (status CONTINUE).
    Data(Vec<u8>),
    /// The client finished the stream (status OK); it has been confirmed already.
    Finish,
    /// The client aborted the stream (status ERROR), with its error if it sent one.
    Abort(Option<RemoteError>),
}

/// A stream opened with [`Connection::open_stream`].
#[derive(Debug)]
pub struct ServerStream {
    writer: StreamWriter,
    reader: StreamReader,
}

/// The sending half of a [`ServerStream`].
#[derive(Debug, Clone)]
pub struct StreamWriter {
    conn: Connection,
    key: StreamKey,
    released: watch::Receiver<bool>,
}

/// The receiving half of a [`ServerStream`].
#[derive(Debug)]
pub struct StreamReader {
    from_client: mpsc::Receiver<StreamPacket>,
}

impl ServerStream {
    pub(crate) fn new(
        conn: Connection,
        key: StreamKey,
        from_client: mpsc::Receiver<StreamPacket>,
        released: watch::Receiver<bool>,
    ) -> Self {
        Self {
            writer: StreamWriter {
                conn,
                key,
                released,
            },
            reader: StreamReader { from_client },
        }
    }

    /// Splits the stream so that one task can pump data out while another reads.
    pub fn split(self) -> (StreamWriter, StreamReader) {
        (self.writer, self.reader)
    }

    /// Sends data to the client.
    pub async fn send(&self, data: &[u8]) -> Result<(), ConnectionClosed> {
        self.writer.send(data).await
    }

    /// Receives the client's next packet; `None` once the stream or connection has ended.
    pub async fn recv(&mut self) -> Option<StreamPacket> {
        self.reader.recv().await
    }
}

impl StreamWriter {
    fn closed(&self) -> ConnectionClosed {
        ConnectionClosed::StreamClosed {
            proc_: self.key.proc_,
            serial: self.key.serial,
        }
    }

    async fn ready(&self) -> Result<(), ConnectionClosed> {
        let mut released = self.released.clone();
        // The reply of the opening call must reach the client before any stream data.
        released.wait_for(|r| *r).await.map_err(|_| self.closed())?;
        if self.conn.stream_is_open(self.key) {
            Ok(())
        } else {
            Err(self.closed())
        }
    }

    /// Sends data, in packets of at most 256 KiB as libvirt does.
    pub async fn send(&self, data: &[u8]) -> Result<(), ConnectionClosed> {
        self.ready().await?;
        for chunk in data.chunks(STREAM_CHUNK_MAX) {
            self.conn
                .send_stream_frame(self.key, MessageStatus::Continue, chunk)
                .await?;
        }
        Ok(())
    }

    /// Ends the stream from the server side: end of file, an empty CONTINUE. The client then
    /// finishes the stream too, which this crate confirms.
    pub async fn finish(&self) -> Result<(), ConnectionClosed> {
        self.ready().await?;
        self.conn
            .send_stream_frame(self.key, MessageStatus::Continue, &[])
            .await
    }

    /// Aborts the stream with `err`, which the client reports.
    pub async fn abort(&self, err: &RemoteError) -> Result<(), ConnectionClosed> {
        self.ready().await?;
        let payload = crate::xdr::to_bytes(err)
            .map_err(|e| ConnectionClosed::Encode(crate::message::EncodeError::Xdr(e)))?;
        let sent = self
            .conn
            .send_stream_frame(self.key, MessageStatus::Error, &payload)
            .await;
        self.conn.drop_stream(self.key);
        sent
    }
}

impl StreamReader {
    /// Receives the client's next packet; `None` once the stream or connection has ended.
    pub async fn recv(&mut self) -> Option<StreamPacket> {
        self.from_client.recv().await
    }
}
