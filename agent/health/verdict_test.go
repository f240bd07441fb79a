package health

import (
	"encoding/json"
	"testing"
	"time"
)

func TestVerdictJSON(t *testing.T) {
	b, err := json.Marshal(Verdict{Good: true, Reason: "ok", Waited: 3200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"good":true,"reason":"ok","waited":"3.2s"}`; string(b) != want {
		t.Errorf("got %s, want %s", b, want)
	}
}
