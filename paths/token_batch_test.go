package paths_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/vault-registry/vault-plugin-registry/tokenapi"
)

// batchAnswers sends requests to token/batch as Vault hands them over
// (decoded from JSON) and returns the answers as the relay reads them.
func (m *mount) batch(requests ...map[string]any) []struct {
	Status int             `json:"status"`
	Data   json.RawMessage `json:"data"`
} {
	m.t.Helper()
	raw, err := json.Marshal(map[string]any{tokenapi.FieldRequests: requests})
	if err != nil {
		m.t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		m.t.Fatal(err)
	}
	resp := m.ok(update, tokenapi.PathTokenBatch, data)
	out, err := json.Marshal(resp.Data)
	if err != nil {
		m.t.Fatal(err)
	}
	var answer struct {
		Answers []struct {
			Status int             `json:"status"`
			Data   json.RawMessage `json:"data"`
		} `json:"answers"`
	}
	if err := json.Unmarshal(out, &answer); err != nil {
		m.t.Fatal(err)
	}
	if len(answer.Answers) != len(requests) {
		m.t.Fatalf("%d answers to %d requests", len(answer.Answers), len(requests))
	}
	return answer.Answers
}

func TestTokenBatch_eachRequestIsAnsweredAsAlone(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "users/alice", map[string]any{"password": "pw", "access": "repository:alice/**:*"})
	rt := m.ok(update, "token", map[string]any{"username": "alice", "password": "pw", "offline_token": true}).Data["refresh_token"].(string)

	answers := m.batch(
		map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository:alice/app:pull,push"}},
		map[string]any{"username": "alice", "password": "wrong"},
		map[string]any{"username": "nobody", "password": "pw"},
		map[string]any{"username": "alice", "password": "pw", "scope": []string{"repository::pull"}},
		map[string]any{},
		map[string]any{"refresh_token": rt, "client_id": "docker", "scope": []string{"repository:alice/x:pull"}},
		map[string]any{"refresh_token": "not-a-refresh-token"},
		map[string]any{"username": "alice", "password": "pw", "offline_token": "maybe"},
		map[string]any{"username": "alice", "password": "pw", "offline_token": true},
	)
	want := []struct {
		status int
		code   tokenapi.Code
	}{
		{200, ""}, {401, tokenapi.CodeInvalidCredentials}, {401, tokenapi.CodeInvalidCredentials},
		{400, tokenapi.CodeInvalidScope}, {401, tokenapi.CodeInvalidCredentials}, {200, ""},
		{400, tokenapi.CodeInvalidGrant}, {400, tokenapi.CodeInvalidRequest}, {200, ""},
	}
	for i, a := range answers {
		if a.Status != want[i].status {
			t.Errorf("request %d: status %d, want %d: %s", i, a.Status, want[i].status, a.Data)
			continue
		}
		if a.Status != http.StatusOK {
			var r tokenapi.Refusal
			if err := json.Unmarshal(a.Data, &r); err != nil || r.Code != want[i].code || r.Message == "" {
				t.Errorf("request %d: refusal %s, want code %s and a message", i, a.Data, want[i].code)
			}
			continue
		}
		var ans tokenapi.Answer
		if err := json.Unmarshal(a.Data, &ans); err != nil || ans.Token == "" || ans.Subject != "alice" {
			t.Errorf("request %d: answer %s", i, a.Data)
		}
	}
	var first tokenapi.Answer
	_ = json.Unmarshal(answers[0].Data, &first)
	if claims := jwtClaims(t, first.Token); string(claims["access"]) != `[{"type":"repository","name":"alice/app","actions":["pull","push"]}]` {
		t.Errorf("access = %s", claims["access"])
	}
	var refreshed, offline tokenapi.Answer
	_ = json.Unmarshal(answers[5].Data, &refreshed)
	_ = json.Unmarshal(answers[8].Data, &offline)
	if refreshed.RefreshToken != rt || offline.RefreshToken == "" {
		t.Errorf("refresh tokens: %q (want the one presented), %q (want a new one)", refreshed.RefreshToken, offline.RefreshToken)
	}
}

// The requests of one batch are checked at once, each against the
// lockout: of three wrong passwords at threshold 2, one is refused 429.
func TestTokenBatch_lockoutHoldsAcrossTheBatch(t *testing.T) {
	m := newMount(t, "registry")
	m.ok(update, "config", map[string]any{"lockout_threshold": 2})
	m.ok(update, "users/bob", map[string]any{"password": "pw"})
	wrong := map[string]any{"username": "bob", "password": "x"}
	statuses := map[int]int{}
	for _, a := range m.batch(wrong, wrong, wrong) {
		statuses[a.Status]++
	}
	if statuses[http.StatusUnauthorized] != 2 || statuses[http.StatusTooManyRequests] != 1 {
		t.Errorf("statuses %v, want two 401 and one 429", statuses)
	}
	for _, a := range m.batch(map[string]any{"username": "bob", "password": "pw"}) {
		if a.Status != http.StatusTooManyRequests {
			t.Errorf("right password while locked out: %d %s, want 429", a.Status, a.Data)
		}
	}
}

func TestTokenBatch_malformedCallsAre400(t *testing.T) {
	m := newMount(t, "registry")
	many := make([]any, tokenapi.MaxBatch+1)
	for i := range many {
		many[i] = map[string]any{}
	}
	for _, tc := range []struct {
		name    string
		data    map[string]any
		mention string
	}{
		{"no requests", map[string]any{}, "requests"},
		{"empty list", map[string]any{"requests": []any{}}, "requests"},
		{"too many", map[string]any{"requests": many}, "at most"},
		{"not objects", map[string]any{"requests": []any{"alice:pw"}}, "requests[0]"},
		{"not a list", map[string]any{"requests": "alice"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m.fail(update, tokenapi.PathTokenBatch, tc.data, http.StatusBadRequest, tc.mention)
		})
	}
}

// FuzzTokenBatch: a hostile token/batch body (as Vault decodes it from
// JSON) gets a 400 as a whole or one answer per request, each with a
// status the single paths answer; never a panic.
func FuzzTokenBatch(f *testing.F) {
	for _, seed := range []string{
		`{"requests":[{"username":"alice","password":"pw"}]}`,
		`{"requests":[{"refresh_token":"x"},{"scope":["repository:a:pull"]},{}]}`,
		`{"requests":[{"username":5,"ttl":"x","offline_token":"maybe","scope":{"a":1}}]}`,
		`{"requests":"alice"}`, `{"requests":[null,[],"x",1]}`, `{}`,
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, body string) {
		var data map[string]any
		if json.Unmarshal([]byte(body), &data) != nil {
			return
		}
		m := newMount(t, "registry")
		m.ok(update, "users/alice", map[string]any{"password": "pw", "access": "repository:alice/**:*"})
		code, resp, msg := m.call(update, tokenapi.PathTokenBatch, data)
		if code == http.StatusBadRequest {
			return
		}
		if code != http.StatusOK {
			t.Fatalf("status %d: %s", code, msg)
		}
		answers, ok := resp.Data[tokenapi.FieldAnswers].([]tokenapi.BatchAnswer)
		if !ok {
			t.Fatalf("answers: %T", resp.Data[tokenapi.FieldAnswers])
		}
		for i, a := range answers {
			switch a.Status {
			case http.StatusOK, http.StatusBadRequest, http.StatusUnauthorized, http.StatusTooManyRequests:
			default:
				t.Errorf("request %d: status %d %v", i, a.Status, a.Data)
			}
		}
	})
}
