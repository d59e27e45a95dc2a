package tokenapi

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestAnswer_dataIsTheJSONShape: the plugin answers Data(), the relay
// decodes the JSON into Answer; both must name the same fields.
func TestAnswer_dataIsTheJSONShape(t *testing.T) {
	for _, a := range []Answer{
		{Token: "t", AccessToken: "t", ExpiresIn: 300, IssuedAt: "2024-01-02T03:04:05Z", RefreshToken: "rt",
			Subject: "alice", Issuer: "Token", Access: []Grant{{Type: "repository", Name: "a", Actions: []string{"pull"}}}},
		{Token: "t", AccessToken: "t", ExpiresIn: 1, Issuer: "Token"}, // anonymous, no grant, no refresh token
	} {
		fromData, err := json.Marshal(a.Data())
		if err != nil {
			t.Fatal(err)
		}
		var back Answer
		if err := json.Unmarshal(fromData, &back); err != nil {
			t.Fatal(err)
		}
		want := a
		if want.Access == nil {
			want.Access = []Grant{} // always present in the answer
		}
		if !reflect.DeepEqual(back, want) {
			t.Errorf("Data() round trip:\n got %+v\nwant %+v", back, want)
		}
		var fromStruct, fromMap map[string]any
		direct, _ := json.Marshal(want)
		_ = json.Unmarshal(direct, &fromStruct)
		_ = json.Unmarshal(fromData, &fromMap)
		if !reflect.DeepEqual(fromStruct, fromMap) {
			t.Errorf("Data() and the struct's JSON differ:\n%v\n%v", fromMap, fromStruct)
		}
	}
}

func TestCode_status(t *testing.T) {
	want := map[Code]int{
		CodeInvalidRequest: 400, CodeInvalidScope: 400, CodeInvalidGrant: 400,
		CodeInvalidCredentials: 401, CodeLockedOut: 429, CodeBusy: 429,
	}
	for c, s := range want {
		if c.Status() != s {
			t.Errorf("%s: %d, want %d", c, c.Status(), s)
		}
	}
}

func TestQuote_boundsAndEscapes(t *testing.T) {
	if got := Quote("a\nb"); got != `"a\nb"` {
		t.Errorf("Quote = %s", got)
	}
	long := Quote(string(make([]byte, 200)))
	if len(long) > 80*4+8 || long[len(long)-3:] != "…" {
		t.Errorf("long input not truncated: %d bytes", len(long))
	}
	if got := OneLine(" a \n\t b\r\n"); got != "a b" {
		t.Errorf("OneLine = %q", got)
	}
}
