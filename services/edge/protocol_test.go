package edge

import (
	"reflect"
	"testing"

	chatv1 "github.com/parleychat/parley/pkg/pb/parley/chat/v1"
	clientv1 "github.com/parleychat/parley/pkg/pb/parley/client/v1"
)

// TestEveryFrameTypeHasAHandler: the handler table covers every case of
// ClientFrame's oneof, and nothing else.
func TestEveryFrameTypeHasAHandler(t *testing.T) {
	fields := (&clientv1.ClientFrame{}).ProtoReflect().Descriptor().Oneofs().ByName("frame").Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		f := (&clientv1.ClientFrame{}).ProtoReflect()
		f.Set(fd, f.NewField(fd))
		if handlers[reflect.TypeOf(f.Interface().(*clientv1.ClientFrame).GetFrame())] == nil {
			t.Errorf("no handler for %s", fd.Name())
		}
	}
	if len(handlers) != fields.Len() {
		t.Errorf("%d handlers for %d frame types", len(handlers), fields.Len())
	}
}

// TestUnknownFrame: a frame without a known body is answered with
// UNKNOWN_FRAME under its request id.
func TestUnknownFrame(t *testing.T) {
	c, _ := pair(t, 10)
	out := c.handle(t.Context(), &clientv1.ClientFrame{RequestId: "r"})
	if out.GetRequestId() != "r" || out.GetError().GetCode() != chatv1.ErrorCode_ERROR_CODE_UNKNOWN_FRAME {
		t.Fatalf("answered %v", out)
	}
}
