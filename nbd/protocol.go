// Package nbd speaks the Network Block Device protocol (fixed newstyle
// handshake, simple replies): a Server that exports Backends over TCP or a
// unix socket — to QEMU, qemu-img, qemu-io or the kernel's nbd client — and
// a Client that reads and writes an export of another server (QEMU's own
// NBD server included), with the block-status queries QEMU answers for its
// dirty bitmaps.
//
// The protocol is specified at
// https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md.
package nbd

import "errors"

// Handshake magics.
const (
	nbdMagic      = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic      = 0x49484156454f5054 // "IHAVEOPT"
	optReplyMagic = 0x0003e889045565a9
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle = 1 << 0
	flagNoZeroes      = 1 << 1
)

// Options.
const (
	optExportName      = 1
	optAbort           = 2
	optList            = 3
	optStartTLS        = 5
	optInfo            = 6
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10
)

// Option replies.
const (
	repAck         = 1
	repServer      = 2
	repInfo        = 3
	repMetaContext = 4
	repErrBit      = 1 << 31
	repErrUnsup    = repErrBit | 1
	repErrPolicy   = repErrBit | 2
	repErrInvalid  = repErrBit | 3
	repErrUnknown  = repErrBit | 6
)

// Info types in NBD_REP_INFO.
const (
	infoExport    = 0
	infoName      = 1
	infoBlockSize = 3
)

// Transmission flags.
const (
	tflagHasFlags     = 1 << 0
	tflagReadOnly     = 1 << 1
	tflagSendFlush    = 1 << 2
	tflagSendFUA      = 1 << 3
	tflagSendTrim     = 1 << 5
	tflagWriteZeroes  = 1 << 6
	tflagCanMultiConn = 1 << 8
)

// Requests.
const (
	requestMagic = 0x25609513
	cmdRead      = 0
	cmdWrite     = 1
	cmdDisc      = 2
	cmdFlush     = 3
	cmdTrim      = 4
	cmdCache     = 5
	cmdZeroes    = 6
	cmdStatus    = 7

	cmdFlagFUA    = 1 << 0
	cmdFlagNoHole = 1 << 1
	cmdFlagReqOne = 1 << 3
)

// Replies.
const (
	simpleReplyMagic     = 0x67446698
	structuredReplyMagic = 0x668e33ef

	replyFlagDone        = 1 << 0
	replyTypeNone        = 0
	replyTypeOffsetData  = 1
	replyTypeOffsetHole  = 2
	replyTypeBlockStatus = 5
	replyTypeErrorBit    = 1 << 15
	replyTypeError       = replyTypeErrorBit | 1
	replyTypeErrorOffset = replyTypeErrorBit | 2
)

// Error numbers on the wire (Linux values, fixed by the protocol).
const (
	errPerm     = 1
	errIO       = 5
	errNoMem    = 12
	errInval    = 22
	errNoSpc    = 28
	errOverflow = 75
	errNotSup   = 95
	errShutdown = 108
)

// MaxRequest is the largest read or write the server accepts (and
// advertises as its maximum block size).
const MaxRequest = 32 << 20

// ErrReadOnly is what a Backend returns for a change to a read-only export;
// the client sees EPERM.
var ErrReadOnly = errors.New("nbd: export is read-only")

// ErrNoSpace is what a Backend returns for a change past its end; the
// client sees ENOSPC.
var ErrNoSpace = errors.New("nbd: beyond the end of the export")
