import Foundation
import FuzzHarnesses

// libFuzzer entry points; the harnesses themselves are in Sources/FuzzHarnesses.
nonisolated(unsafe) var harness: Harness = .json
nonisolated(unsafe) var scratch = URL(fileURLWithPath: "/tmp")

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> CInt {
    let name = ProcessInfo.processInfo.environment["ASSAY_FUZZ_TARGET"] ?? ""
    guard let h = Harness(rawValue: name) else {
        FileHandle.standardError.write(Data("set ASSAY_FUZZ_TARGET to one of: \(Harness.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    harness = h
    // Files go to a private directory in shared memory when there is one (no disk I/O per run).
    let base = FileManager.default.fileExists(atPath: "/dev/shm") ? "/dev/shm" : NSTemporaryDirectory()
    scratch = URL(fileURLWithPath: base).appendingPathComponent("assay-fuzz-\(name)-\(getpid())")
    try? FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    atexit { try? FileManager.default.removeItem(at: scratch) }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func testOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    harness.run(Array(UnsafeBufferPointer(start: data, count: size)), scratch: scratch)
    return 0
}
