import Foundation

public extension String {
    /// The string with control characters, escape sequences and bidirectional overrides made
    /// visible (`\u{1B}`), so a hostile tensor or file name cannot drive the terminal or hide
    /// text when printed.
    var terminalSafe: String {
        var out = ""
        out.reserveCapacity(utf8.count)
        for s in unicodeScalars {
            switch s.value {
            case 0x00...0x1F, 0x7F...0x9F, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069:
                out += "\\u{\(String(s.value, radix: 16, uppercase: true))}"
            case 0x5C:
                out += "\\\\"
            default:
                out.unicodeScalars.append(s)
            }
        }
        return out
    }
}

public enum FileWriteError: Error, CustomStringConvertible, Sendable {
    case cannotCreate(path: String, reason: String)
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case let .cannotCreate(path, reason): return "cannot write \(path.terminalSafe): \(reason)"
        case let .writeFailed(path, reason): return "writing \(path.terminalSafe) failed: \(reason)"
        }
    }
}

/// Writes a file so that readers see either the old file or the complete new one, never a
/// partial one: the bytes go to a temporary file in the same directory, which is renamed over
/// the destination only after every byte is written and synced.
public struct AtomicFileWriter: ~Copyable {
    public let destination: URL
    let temporary: URL
    let fd: Int32
    private var finished = false

    public init(destination: URL) throws(FileWriteError) {
        self.destination = destination
        let dir = destination.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(destination.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        let fd = open(tmp.path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            throw FileWriteError.cannotCreate(path: destination.path, reason: String(cString: strerror(errno)))
        }
        self.temporary = tmp
        self.fd = fd
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(FileWriteError) {
        var done = 0
        while done < bytes.count {
            let n = Foundation.write(fd, bytes.baseAddress! + done, bytes.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                throw FileWriteError.writeFailed(path: destination.path, reason: String(cString: strerror(errno)))
            }
            done += n
        }
    }

    public func write(_ data: [UInt8]) throws(FileWriteError) {
        let r: Result<Void, FileWriteError> = data.withUnsafeBytes { b in
            do throws(FileWriteError) { try write(b); return .success(()) } catch { return .failure(error) }
        }
        try r.get()
    }

    /// Syncs, closes and renames into place.
    public consuming func commit() throws(FileWriteError) {
        finished = true
        if fsync(fd) != 0 || close(fd) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw FileWriteError.writeFailed(path: destination.path, reason: reason)
        }
        if rename(temporary.path, destination.path) != 0 {
            let reason = String(cString: strerror(errno))
            unlink(temporary.path)
            throw FileWriteError.writeFailed(path: destination.path, reason: reason)
        }
    }

    deinit {
        if !finished {
            close(fd)
            unlink(temporary.path)
        }
    }

    /// Writes `bytes` to `url` atomically.
    public static func write(_ bytes: [UInt8], to url: URL) throws(FileWriteError) {
        let w = try AtomicFileWriter(destination: url)
        try w.write(bytes)
        try w.commit()
    }

    public static func write(_ text: String, to url: URL) throws(FileWriteError) {
        try write(Array(text.utf8), to: url)
    }
}
