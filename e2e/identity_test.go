//go:build e2e

package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Vault identities as registry users, end to end: Vault's own auth methods
// (userpass, approle, jwt, ldap against a real slapd), identity groups
// given access on the plugin, the relay taking a Vault token or an auth
// method's password, and crane pushing and pulling on registries 2.8 and v3.

const identityPolicy = "registry-identity"

// identityStack is a Stack whose relay also serves Vault identities, with
// the identity policy written and both registries running.
type identityStack struct {
	*Stack
	svc   *Service
	regs  []*Registry
	relay *Relay // the identity relay (Stack.Relay is the plain one)
}

// newIdentityStack starts Vault with the plugin at "registry", writes the
// policy an identity needs (deploy/policies/identity.hcl), and a relay
// whose YAML has the identity section given.
func newIdentityStack(t *testing.T, identityYAML string) *identityStack {
	t.Helper()
	st := &identityStack{Stack: NewStack(t, "registry")}
	st.svc = st.Services["registry"]
	st.Vault.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "identity.hcl")), "policy", "write", identityPolicy, "-")
	st.relay = StartRelay(t, RelayOptions{Vault: st.Vault, Services: []string{"registry"}, Extra: identityYAML})
	for _, kind := range registryKinds {
		st.regs = append(st.regs, StartRegistry(t, kind, st.relay, st.svc))
	}
	return st
}

// callAs calls Vault's HTTP API with token (empty: none) and returns the
// status and the decoded answer.
func (v *Vault) callAs(t testing.TB, token, method, path string, body any) (int, map[string]any) {
	t.Helper()
	var raw []byte
	if body != nil {
		raw = mustJSON(t, body)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Vault-Token", token)
	}
	code, _, answer := doHTTP(t, req)
	var out map[string]any
	if len(bytes.TrimSpace(answer)) > 0 {
		if err := json.Unmarshal(answer, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, code, truncate(answer, 300))
		}
	}
	return code, out
}

// root calls Vault as root and fails the test unless it succeeds.
func (v *Vault) root(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	code, out := v.callAs(t, rootToken, method, path, body)
	if code >= 300 {
		t.Fatalf("%s %s: %d %v", method, path, code, out)
	}
	return out
}

// login logs in at an auth method's path and returns the Vault token and
// its entity id.
func (v *Vault) login(t testing.TB, path string, body any) (token, entityID string) {
	t.Helper()
	code, out := v.callAs(t, "", http.MethodPut, path, body)
	token, entityID = jsonField(out, "auth", "client_token"), jsonField(out, "auth", "entity_id")
	if code != http.StatusOK || token == "" || entityID == "" {
		t.Fatalf("login at %s: %d %v", path, code, out)
	}
	return token, entityID
}

func (v *Vault) entityName(t testing.TB, id string) string {
	t.Helper()
	name := jsonField(v.root(t, http.MethodGet, "identity/entity/id/"+id, nil), "data", "name")
	if name == "" {
		t.Fatalf("entity %s has no name", id)
	}
	return name
}

func (v *Vault) authAccessor(t testing.TB, mount string) string {
	t.Helper()
	acc := jsonField(v.root(t, http.MethodGet, "sys/auth", nil), "data", mount+"/", "accessor")
	if acc == "" {
		t.Fatalf("no accessor for auth mount %s", mount)
	}
	return acc
}

// scopedToken asks the relay for a token with Basic credentials and
// returns its claims; the request must succeed.
func scopedToken(t testing.TB, r *Relay, user, password string, scopes ...string) claimSet {
	t.Helper()
	code, _, body := r.Token(t, "registry", user, password, scopes...)
	if code != http.StatusOK {
		t.Fatalf("token for %s: %d %s", user, code, truncate(body, 300))
	}
	return tokenClaims(t, body)
}

func grantString(c claimSet) string {
	var parts []string
	for _, a := range c.Access {
		parts = append(parts, a.Type+":"+a.Name+":"+strings.Join(a.Actions, ","))
	}
	return strings.Join(parts, ";")
}

// pushPullAs pushes a new image as user/password with crane to every
// registry of the stack, and pulls it back.
func (st *identityStack) pushPullAs(t testing.TB, user, password, repoTag string) {
	t.Helper()
	for _, reg := range st.regs {
		c := NewClient(t, Crane)
		img := NewTestImage(t)
		mustOK(t, c.Login(reg, user, password))
		mustOK(t, c.Push(reg, repoTag, img))
		pullSame(t, c, reg, repoTag, img)
	}
}

// pushFails checks that user/password may not push repoTag anywhere.
func (st *identityStack) pushFails(t testing.TB, user, password, repoTag string) {
	t.Helper()
	for _, reg := range st.regs {
		c := NewClient(t, Crane)
		mustOK(t, c.Login(reg, user, password))
		mustFail(t, fmt.Sprintf("push %s to %s as %s", repoTag, reg.Kind, user), c.Push(reg, repoTag, NewTestImage(t)))
	}
}

// TestIdentity_userpassAndAppRole: a userpass user and an AppRole machine
// push with their Vault token as the password; access comes from a Vault
// group (and an entity of its own); leaving the group takes effect on the
// next token; the root token (no entity) is refused with the reason;
// refresh tokens die with the entity.
func TestIdentity_userpassAndAppRole(t *testing.T) {
	st := newIdentityStack(t, "")
	v := st.Vault
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/alice", map[string]any{"password": "alice-vault-pw", "token_policies": identityPolicy})
	aliceToken, aliceID := v.login(t, "auth/userpass/login/alice", map[string]any{"password": "alice-vault-pw"})
	alice := v.entityName(t, aliceID)
	v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "devs", "member_entity_ids": []string{aliceID}})
	v.CLI(t, "write", "registry/groups/devs", "access=repository:team/*:pull,push;repository:${user}/**:*")

	st.pushPullAs(t, "vault", aliceToken, "team/app:v1")
	st.pushPullAs(t, "vault", aliceToken, alice+"/own/app:v1")
	st.pushFails(t, "vault", aliceToken, "other/app:v1")
	if c := scopedToken(t, st.relay, "vault", aliceToken, "repository:team/app:push,pull"); c.Sub != alice || grantString(c) != "repository:team/app:push,pull" {
		t.Errorf("alice's token: sub %q grant %q", c.Sub, grantString(c))
	}

	// Leaving the group: the next token lacks the access.
	v.root(t, http.MethodPost, "identity/group/name/devs", map[string]any{"member_entity_ids": []string{}})
	if c := scopedToken(t, st.relay, "vault", aliceToken, "repository:team/app:push,pull"); len(c.Access) != 0 {
		t.Errorf("after leaving devs: grant %q", grantString(c))
	}

	// The root token has no entity, a made-up token is unknown to Vault:
	// the public relay answers both the same 401 (issue 20, point 7); the
	// reason is in its log, the token is not.
	code, _, rootBody := st.relay.Token(t, "registry", "vault", rootToken)
	if code != http.StatusUnauthorized {
		t.Errorf("root token: %d %s, want 401", code, rootBody)
	}
	code, _, madeUpBody := st.relay.Token(t, "registry", "vault", "hvs.not-a-token")
	if code != http.StatusUnauthorized || string(madeUpBody) != string(rootBody) {
		t.Errorf("made-up token: %d %s; root token: %s; want the same 401", code, madeUpBody, rootBody)
	}
	waitFor(t, "the root token's refusal in the relay log", st.relay.Proc, 10*time.Second, func() error {
		if countLines(st.relay.Proc.Log(), "status=401", "no identity entity") == 0 {
			return fmt.Errorf("no line with the reason:\n%s", tail(st.relay.Proc.Log(), 10))
		}
		return nil
	})
	if strings.Contains(st.relay.Proc.Log(), rootToken) {
		t.Error("the relay log holds the root token")
	}

	// AppRole: a machine with access of its own (entities/<name>).
	v.CLI(t, "auth", "enable", "approle")
	v.root(t, http.MethodPut, "auth/approle/role/builder", map[string]any{"token_policies": identityPolicy, "token_type": "batch"})
	roleID := jsonField(v.root(t, http.MethodGet, "auth/approle/role/builder/role-id", nil), "data", "role_id")
	secretID := jsonField(v.root(t, http.MethodPut, "auth/approle/role/builder/secret-id", nil), "data", "secret_id")
	botToken, botID := v.login(t, "auth/approle/login", map[string]any{"role_id": roleID, "secret_id": secretID})
	bot := v.entityName(t, botID)
	v.CLI(t, "write", "registry/entities/"+bot, "access=repository:builds/*:push,pull")
	st.pushPullAs(t, "vault", botToken, "builds/app:v1")
	st.pushFails(t, "vault", botToken, "team/app:v2")

	// The relay asks no refresh token for an identity (docker keeps the
	// Vault token instead, which Vault checks on every login).
	code, body := postForm(t, st.relay, url.Values{"grant_type": {"password"}, "username": {"vault"}, "password": {botToken},
		"service": {"registry"}, "client_id": {"docker"}, "access_type": {"offline"}})
	if code != http.StatusOK || strings.Contains(string(body), "refresh_token") {
		t.Fatalf("offline token for the AppRole through the relay: %d %s", code, body)
	}
	// A caller of token/identity may ask one when the operator allows
	// them: it works at the relay with any client_id, and dies with its
	// entity.
	v.CLI(t, "write", "registry/config", "identity_refresh_tokens=true")
	code, out := v.callAs(t, botToken, http.MethodPut, "registry/token/identity", map[string]any{"offline_token": true, "client_id": "ci"})
	rt := jsonField(out, "data", "refresh_token")
	if code != http.StatusOK || rt == "" {
		t.Fatalf("token/identity offline_token=true: %d %v", code, out)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"buildkit"},
		"service": {"registry"}, "scope": {"repository:builds/app:pull"}}
	if code, body := postForm(t, st.relay, form); code != http.StatusOK || !strings.Contains(string(body), "access_token") {
		t.Fatalf("refresh: %d %s", code, body)
	}
	v.root(t, http.MethodPost, "identity/entity/id/"+botID, map[string]any{"disabled": true})
	if code, body := postForm(t, st.relay, form); code != http.StatusUnauthorized || oauthError(body) != "invalid_grant" {
		t.Errorf("refresh after disabling the entity: %d %s", code, body)
	}
	assertLogsFree(t, []string{aliceToken, botToken, rt, "alice-vault-pw", secretID}, st.relay.Proc)
}

// TestIdentity_ciJobViaJWT: the JWT auth method with a key pair made here
// stands in for a CI issuer (GitHub Actions, GitLab CI): a job token
// signed here, bound claims and a role; the job logs in to Vault with it
// and pushes with the Vault token as the password.
func TestIdentity_ciJobViaJWT(t *testing.T) {
	st := newIdentityStack(t, "")
	v := st.Vault
	ci := newCIIssuer(t)
	key, pub := ci.key, ci.publicPEM()
	const issuer = "https://ci.example.test"
	v.CLI(t, "auth", "enable", "jwt")
	v.root(t, http.MethodPut, "auth/jwt/config", map[string]any{"jwt_validation_pubkeys": []string{pub}, "bound_issuer": issuer})
	v.root(t, http.MethodPut, "auth/jwt/role/acme-app", map[string]any{
		"role_type": "jwt", "user_claim": "sub", "bound_audiences": []string{"vault"},
		"bound_claims":   map[string]any{"project_path": "acme/app", "ref_protected": "true"},
		"token_policies": identityPolicy, "token_type": "batch", "token_ttl": "10m",
	})
	v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "ci-acme-app", "policies": []string{}})
	v.CLI(t, "write", "registry/groups/ci-acme-app", "access=repository:acme/app:push,pull")

	jobToken := func(project string) string {
		now := time.Now()
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{
			"iss": issuer, "aud": "vault", "sub": "project_path:" + project + ":ref_type:branch:ref:main",
			"project_path": project, "ref_protected": "true", "iat": now.Unix(), "nbf": now.Add(-time.Second).Unix(),
			"exp": now.Add(5 * time.Minute).Unix(),
		})
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// The job: `vault write auth/jwt/login role=… jwt=$CI_JOB_JWT`.
	vaultToken := strings.TrimSpace(v.CLI(t, "write", "-field=token", "auth/jwt/login", "role=acme-app", "jwt="+jobToken("acme/app")))
	code, out := v.callAs(t, vaultToken, http.MethodGet, "auth/token/lookup-self", nil)
	entityID := jsonField(out, "data", "entity_id")
	if code != http.StatusOK || entityID == "" {
		t.Fatalf("lookup-self of the job's token: %d %v", code, out)
	}
	v.root(t, http.MethodPost, "identity/group/name/ci-acme-app", map[string]any{"member_entity_ids": []string{entityID}})

	st.pushPullAs(t, "vault", vaultToken, "acme/app:build-1")
	st.pushFails(t, "vault", vaultToken, "acme/other:build-1")

	// A job of another project fails the bound claims: no Vault token.
	if _, errOut, err := v.TryCLI("", "write", "auth/jwt/login", "role=acme-app", "jwt="+jobToken("evil/app")); err == nil ||
		!strings.Contains(errOut, "claim") {
		t.Errorf("a job of another project logged in: %v %s", err, errOut)
	}
	assertLogsFree(t, []string{vaultToken}, st.relay.Proc)
}

// TestIdentity_userpassBehindTheRelay: `docker login -u alice -p <userpass
// password>` through the relay (identity.password_mounts); a proven
// password reuses its Vault token; batch tokens leave no lease behind,
// service tokens leave one per login.
func TestIdentity_userpassBehindTheRelay(t *testing.T) {
	st := newIdentityStack(t, "identity:\n  password_mounts: [userpass]\n")
	v := st.Vault
	v.CLI(t, "auth", "enable", "userpass")
	v.root(t, http.MethodPut, "auth/userpass/users/carol", map[string]any{"password": "carol-pw", "token_policies": identityPolicy, "token_type": "batch"})
	_, carolID := v.login(t, "auth/userpass/login/carol", map[string]any{"password": "carol-pw"})
	v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "devs", "member_entity_ids": []string{carolID}})
	v.CLI(t, "write", "registry/groups/devs", "access=repository:team/*:pull,push")
	// A plugin user of the same relay keeps working, and comes first.
	st.svc.WriteUser(t, "dave", "dave-pw", "repository:dave/*:*")

	before := st.relay.Outcomes(t)
	st.pushPullAs(t, "carol", "carol-pw", "team/app:v1")
	st.pushPullAs(t, "dave", "dave-pw", "dave/app:v1")
	st.pushFails(t, "carol", "carol-pw", "dave/app:v2")
	after := st.relay.Outcomes(t)
	if after[Unauthorized] != before[Unauthorized] {
		t.Errorf("good passwords got %v refusals", after[Unauthorized]-before[Unauthorized])
	}
	logins := identityLogins(t, st.relay)
	if logins["login"] != 1 || logins["reused"] < 2 {
		t.Errorf("identity logins %v: want one Vault login, its token reused after", logins)
	}

	// Unknown user and wrong password answer alike.
	_, _, unknown := st.relay.Token(t, "registry", "nobody", "x")
	_, _, wrong := st.relay.Token(t, "registry", "carol", "wrong")
	if string(unknown) != string(wrong) {
		t.Errorf("unknown user %s, wrong password %s", unknown, wrong)
	}

	// Why batch tokens: a relay that logs in for every request (no reuse)
	// leaves a lease per login with service tokens, none with batch ones.
	plain := StartRelay(t, RelayOptions{Vault: v, Services: []string{"registry"},
		Extra: "identity:\n  password_mounts: [userpass]\n  token_reuse: 0s\n"})
	for range 3 {
		scopedToken(t, plain, "carol", "carol-pw", "repository:team/app:pull")
	}
	if n := leaseCount(t, v, "auth/userpass/login/carol"); n != 0 {
		t.Errorf("batch tokens left %d leases", n)
	}
	v.root(t, http.MethodPost, "auth/userpass/users/carol", map[string]any{"token_type": "service"})
	base := leaseCount(t, v, "auth/userpass/login/carol")
	for range 3 {
		scopedToken(t, plain, "carol", "carol-pw", "repository:team/app:pull")
	}
	if n := leaseCount(t, v, "auth/userpass/login/carol") - base; n != 3 {
		t.Errorf("3 logins with service tokens left %d new leases; want 3", n)
	}
	t.Logf("leases after 3 relay logins: batch tokens 0, service tokens %d", leaseCount(t, v, "auth/userpass/login/carol")-base)
	assertLogsFree(t, []string{"carol-pw", "dave-pw"}, st.relay.Proc, plain.Proc)
}

// leaseCount is the number of leases under a prefix (sys/leases/lookup).
func leaseCount(t testing.TB, v *Vault, prefix string) int {
	t.Helper()
	code, out := v.callAs(t, rootToken, "LIST", "sys/leases/lookup/"+prefix, nil)
	if code == http.StatusNotFound {
		return 0
	}
	if code != http.StatusOK {
		t.Fatalf("list leases %s: %d %v", prefix, code, out)
	}
	keys, _ := out["data"].(map[string]any)["keys"].([]any)
	return len(keys)
}

// identityLogins reads godoauth_relay_identity_logins_total by outcome.
func identityLogins(t testing.TB, r *Relay) map[string]float64 {
	t.Helper()
	counts := map[string]float64{}
	for line := range strings.SplitSeq(r.Metrics(t), "\n") {
		m := metricLine.FindStringSubmatch(line)
		if m == nil || m[1] != "godoauth_relay_identity_logins_total" {
			continue
		}
		var n float64
		fmt.Sscan(m[3], &n)
		counts[strings.TrimSuffix(strings.TrimPrefix(m[2], `{outcome="`), `"}`)] = n
	}
	return counts
}

// slapd is Debian's OpenLDAP server, started by a test on loopback with a
// tree of its own (mdb backend in a temporary directory).
type slapd struct {
	URL    string
	BaseDN string
	Admin  string
	Pass   string
	Proc   *Process
	env    []string
}

const ldapBase = "dc=example,dc=test"

// startSlapd loads ldif into a new directory with slapadd and serves it on
// ldap://127.0.0.1:PORT/ until the test ends (stopped by its PID).
func startSlapd(t testing.TB, ldif string) *slapd {
	t.Helper()
	dir := t.TempDir()
	mustWrite(t, filepath.Join(dir, "data", ".keep"), nil)
	s := &slapd{BaseDN: ldapBase, Admin: "cn=admin," + ldapBase, Pass: "ldap-admin-pw", env: baseEnv(dir)}
	conf := filepath.Join(dir, "slapd.conf")
	mustWrite(t, conf, []byte(fmt.Sprintf(`include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
pidfile %[1]s/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "%[2]s"
rootdn "%[3]s"
rootpw %[4]s
directory %[1]s/data
`, dir, ldapBase, s.Admin, s.Pass)))
	mustWrite(t, filepath.Join(dir, "tree.ldif"), []byte(ldif))
	if r := RunCommand(t, s.env, dir, "", tool(t, "slapadd"), "-f", conf, "-l", filepath.Join(dir, "tree.ldif")); !r.OK() {
		t.Fatalf("slapadd: %v", r)
	}
	port := freePort(t)
	s.URL = fmt.Sprintf("ldap://127.0.0.1:%d", port)
	// -d 0: stay in the foreground, so the harness stops it by its PID.
	s.Proc = StartProcess(t, "slapd", s.env, "/usr/sbin/slapd", "-f", conf, "-h", s.URL+"/", "-d", "0")
	waitFor(t, "slapd", s.Proc, startTimeout, func() error {
		r := RunCommand(t, s.env, "", "", tool(t, "ldapwhoami"), "-x", "-H", s.URL, "-D", s.Admin, "-w", s.Pass)
		if !r.OK() {
			return fmt.Errorf("%s", r.Stderr)
		}
		return nil
	})
	return s
}

// enableAuth enables Vault's ldap auth method against this directory, its
// groups read from groupOfNames entries, its logins given the identity
// policy and tokens of tokenType; it returns the mount's accessor.
func (s *slapd) enableAuth(t testing.TB, v *Vault, tokenType string) string {
	t.Helper()
	v.CLI(t, "auth", "enable", "ldap")
	v.root(t, http.MethodPut, "auth/ldap/config", map[string]any{
		"url": s.URL, "binddn": s.Admin, "bindpass": s.Pass,
		"userdn": "ou=people," + ldapBase, "userattr": "uid",
		"groupdn": "ou=groups," + ldapBase, "groupattr": "cn",
		"groupfilter":    "(&(objectClass=groupOfNames)(member={{.UserDN}}))",
		"token_policies": identityPolicy, "token_type": tokenType,
	})
	return v.authAccessor(t, "ldap")
}

// modify applies an LDIF change as the directory's admin.
func (s *slapd) modify(t testing.TB, ldif string) {
	t.Helper()
	if r := RunCommand(t, s.env, "", ldif, tool(t, "ldapmodify"), "-x", "-H", s.URL, "-D", s.Admin, "-w", s.Pass); !r.OK() {
		t.Fatalf("ldapmodify: %v", r)
	}
}

const ldapTree = `dn: dc=example,dc=test
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,dc=example,dc=test
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=example,dc=test
objectClass: organizationalUnit
ou: groups

dn: uid=erin,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: erin
cn: Erin
sn: E
userPassword: erin-ldap-pw

dn: uid=frank,ou=people,dc=example,dc=test
objectClass: inetOrgPerson
uid: frank
cn: Frank
sn: F
userPassword: frank-ldap-pw

dn: cn=developers,ou=groups,dc=example,dc=test
objectClass: groupOfNames
cn: developers
member: uid=erin,ou=people,dc=example,dc=test
member: uid=frank,ou=people,dc=example,dc=test

dn: cn=releasers,ou=groups,dc=example,dc=test
objectClass: groupOfNames
cn: releasers
member: uid=erin,ou=people,dc=example,dc=test
`

// TestIdentity_ldapBehindTheRelay: Vault's ldap auth method against a real
// slapd; LDAP groups mapped to Vault external groups with group aliases;
// `docker login -u erin -p <LDAP password>` through the relay; push and
// pull with crane on registry 2.8 and v3; removing erin from an LDAP group
// takes that access away on her next token.
func TestIdentity_ldapBehindTheRelay(t *testing.T) {
	ldap := startSlapd(t, ldapTree)
	// token_reuse 0s: every token request logs in to Vault, which is when
	// Vault reads the LDAP groups again (with reuse, within token_reuse).
	st := newIdentityStack(t, "identity:\n  password_mounts: [ldap]\n  token_reuse: 0s\n")
	v := st.Vault
	accessor := ldap.enableAuth(t, v, "batch")
	// Name tokens after the LDAP user (alias_name), so ${user} is "erin".
	st.svc.WriteConfig(t, "identity_subject=alias_name", "identity_alias_mount="+accessor)
	for _, g := range []string{"developers", "releasers"} {
		id := jsonField(v.root(t, http.MethodPut, "identity/group", map[string]any{"name": "ldap-" + g, "type": "external"}), "data", "id")
		v.root(t, http.MethodPut, "identity/group-alias", map[string]any{"name": g, "mount_accessor": accessor, "canonical_id": id})
	}
	v.CLI(t, "write", "registry/groups/ldap-developers", "access=repository:dev/*:pull,push;repository:${user}/**:*")
	v.CLI(t, "write", "registry/groups/ldap-releasers", "access=repository:release/*:pull,push")

	st.pushPullAs(t, "erin", "erin-ldap-pw", "dev/app:v1")
	st.pushPullAs(t, "erin", "erin-ldap-pw", "release/app:v1")
	st.pushPullAs(t, "erin", "erin-ldap-pw", "erin/scratch:v1")
	st.pushPullAs(t, "frank", "frank-ldap-pw", "dev/tool:v1")
	st.pushFails(t, "frank", "frank-ldap-pw", "release/app:v2")
	st.pushFails(t, "frank", "frank-ldap-pw", "erin/scratch:v2")
	if c := scopedToken(t, st.relay, "erin", "erin-ldap-pw", "repository:release/app:push"); c.Sub != "erin" || grantString(c) != "repository:release/app:push" {
		t.Errorf("erin's token: sub %q grant %q", c.Sub, grantString(c))
	}

	// A wrong LDAP password and an unknown user answer alike.
	_, _, unknown := st.relay.Token(t, "registry", "nobody", "x")
	_, _, wrong := st.relay.Token(t, "registry", "erin", "wrong")
	if string(unknown) != string(wrong) || !strings.Contains(string(wrong), "invalid username or password") {
		t.Errorf("unknown user %s, wrong password %s", unknown, wrong)
	}

	// Out of the LDAP group releasers: the next token lacks release/*.
	ldap.modify(t, "dn: cn=releasers,ou=groups,"+ldapBase+"\nchangetype: modify\nadd: member\nmember: uid=frank,ou=people,"+ldapBase+"\n-\ndelete: member\nmember: uid=erin,ou=people,"+ldapBase+"\n")
	if c := scopedToken(t, st.relay, "erin", "erin-ldap-pw", "repository:release/app:push", "repository:dev/app:push"); grantString(c) != "repository:dev/app:push" {
		t.Errorf("erin after leaving releasers: grant %q", grantString(c))
	}
	st.pushFails(t, "erin", "erin-ldap-pw", "release/app:v3")
	st.pushPullAs(t, "frank", "frank-ldap-pw", "release/app:v4")
	assertLogsFree(t, []string{"erin-ldap-pw", "frank-ldap-pw", ldap.Pass}, st.relay.Proc)
}

// TestIdentity_sessionsShareBatches: the requests of two Vault tokens of
// different entities, sent at once, share the relay's token/batch calls
// (identity sessions, issued as leases of each token), and each gets its
// own entity's grant; after `vault token revoke` the next requests with
// that token are refused within a second, while the other token's go on,
// and the revoked token's session lease is gone.
func TestIdentity_sessionsShareBatches(t *testing.T) {
	st := NewStack(t, "registry")
	v := st.Vault
	v.CLIInput(t, readFileString(t, filepath.Join("..", "deploy", "policies", "identity.hcl")), "policy", "write", identityPolicy, "-")
	relay := StartRelay(t, RelayOptions{Vault: v, Services: []string{"registry"}})
	v.CLI(t, "auth", "enable", "userpass")
	tokens, subs := map[string]string{}, map[string]string{}
	for _, u := range []struct{ name, group, access string }{
		{"alice", "devs", "repository:team/*:pull,push"},
		{"bob", "ops", "repository:ops/*:pull"},
	} {
		v.root(t, http.MethodPut, "auth/userpass/users/"+u.name, map[string]any{"password": u.name + "-pw", "token_policies": identityPolicy})
		token, id := v.login(t, "auth/userpass/login/"+u.name, map[string]any{"password": u.name + "-pw"})
		tokens[u.name], subs[u.name] = token, v.entityName(t, id)
		v.root(t, http.MethodPut, "identity/group", map[string]any{"name": u.group, "member_entity_ids": []string{id}})
		v.CLI(t, "write", "registry/groups/"+u.group, "access="+u.access)
	}
	wantGrant := map[string]string{"alice": "repository:team/app:pull,push", "bob": ""}
	scopes := []string{"repository:team/app:pull,push"}
	for name, tok := range tokens {
		// The first request proves the token, the second asks a session.
		for range 2 {
			if c := scopedToken(t, relay, "vault", tok, scopes...); c.Sub != subs[name] || grantString(c) != wantGrant[name] {
				t.Fatalf("%s alone: sub %q grant %q", name, c.Sub, grantString(c))
			}
		}
	}
	sessions := leaseCount(t, v, "registry/token/identity")
	if sessions != 2 {
		t.Errorf("%d session leases under registry/token/identity, want 2 (one per Vault token)", sessions)
	}
	batchedBefore := relay.Metric(t, "godoauth_relay_vault_batched_token_requests_total")
	for round := range 3 {
		for _, r := range identityBurst(relay, tokens, 32, scopes) {
			switch {
			case r.err != nil:
				t.Fatalf("round %d, %s: %v", round, r.name, r.err)
			case r.code != http.StatusOK || r.claims.Sub != subs[r.name] || grantString(r.claims) != wantGrant[r.name]:
				t.Fatalf("round %d, %s's Vault token: %d sub %q grant %q; want sub %q grant %q",
					round, r.name, r.code, r.claims.Sub, grantString(r.claims), subs[r.name], wantGrant[r.name])
			}
		}
	}
	batched := relay.Metric(t, "godoauth_relay_vault_batched_token_requests_total") - batchedBefore
	t.Logf("of 192 identity requests sent 64 at a time, %.0f went in batches", batched)
	if batched < 64 {
		t.Errorf("%.0f of 192 identity requests went in batches; want most", batched)
	}

	// Revoke alice's token: Vault revokes her session with it.
	v.CLI(t, "token", "revoke", tokens["alice"])
	revoked := time.Now()
	// Bursts until one holds a refusal of alice's; within that burst some
	// may still have been served (Vault revokes the lease a moment after
	// the token), never in the next.
	var refusedAfter time.Duration
	for refusedAfter == 0 && time.Since(revoked) < 5*time.Second {
		for _, r := range identityBurst(relay, tokens, 16, scopes) {
			switch {
			case r.err != nil:
				t.Fatalf("%s after the revocation: %v", r.name, r.err)
			case r.name == "bob" && (r.code != http.StatusOK || r.claims.Sub != subs["bob"]):
				t.Fatalf("bob after alice's revocation: %d %q", r.code, r.claims.Sub)
			case r.name == "alice" && r.code != http.StatusOK && refusedAfter == 0:
				refusedAfter = time.Since(revoked)
			}
		}
	}
	t.Logf("the revoked token was first refused %s after `vault token revoke`", refusedAfter.Round(time.Millisecond))
	if refusedAfter == 0 || refusedAfter > time.Second {
		t.Errorf("the revoked token was refused after %s; want within a second", refusedAfter)
	}
	for _, r := range identityBurst(relay, map[string]string{"alice": tokens["alice"]}, 16, scopes) {
		if r.err != nil || r.code != http.StatusUnauthorized {
			t.Errorf("alice, revoked: %d %v; want 401", r.code, r.err)
		}
	}
	if n := leaseCount(t, v, "registry/token/identity"); n != sessions-1 {
		t.Errorf("%d session leases after revoking one of %d tokens; want %d", n, sessions, sessions-1)
	}
	assertLogsFree(t, []string{tokens["alice"], tokens["bob"], "alice-pw", "bob-pw"}, relay.Proc)
}

// identityAnswer is one answer of identityBurst.
type identityAnswer struct {
	name   string
	code   int
	claims claimSet
	err    error
}

// identityBurst sends n token requests at once for each named Vault token as the
// password, and returns the answers.
func identityBurst(r *Relay, tokens map[string]string, n int, scopes []string) []identityAnswer {
	q := url.Values{"service": {"registry"}, "scope": scopes}
	var mu sync.Mutex
	var out []identityAnswer
	var wg sync.WaitGroup
	for name, tok := range tokens {
		for range n {
			wg.Go(func() {
				res := identityAnswer{name: name}
				req, err := http.NewRequest(http.MethodGet, r.URL+"/auth?"+q.Encode(), nil)
				if err == nil {
					req.SetBasicAuth("vault", tok)
					res.code, res.claims, res.err = getClaims(req)
				} else {
					res.err = err
				}
				mu.Lock()
				out = append(out, res)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// getClaims sends req and decodes the claims of a 200's token.
func getClaims(req *http.Request) (int, claimSet, error) {
	var c claimSet
	client := &http.Client{Timeout: 30 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		return 0, c, err
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
		return resp.StatusCode, c, nil
	}
	parts := strings.Split(body.Token, ".")
	if len(parts) != 3 {
		return resp.StatusCode, c, fmt.Errorf("token has %d parts", len(parts))
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return resp.StatusCode, c, err
	}
	return resp.StatusCode, c, json.Unmarshal(raw, &c)
}
