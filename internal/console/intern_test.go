package console

import (
	"strconv"
	"testing"
	"unsafe"
)

func TestInternerSharesAndStaysBounded(t *testing.T) {
	in := newInterner(100)
	first := in.str(string([]byte("http.request.method")))
	again := in.str(string([]byte("http.request.method")))
	if unsafe.StringData(first) != unsafe.StringData(again) {
		t.Fatal("the same text interned twice gave two copies")
	}
	for i := range 1000 { // ids that never repeat
		in.str("id-" + strconv.Itoa(i))
	}
	if len(in.seen) > 100 {
		t.Fatalf("the interner holds %d strings, more than its 100", len(in.seen))
	}
}
