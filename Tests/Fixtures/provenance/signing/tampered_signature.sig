{
  "dsseEnvelope": {
    "payload": "eyJfdHlwZSI6ICJodHRwczovL2luLXRvdG8uaW8vU3RhdGVtZW50L3YxIiwgInByZWRpY2F0ZSI6IHsicmVzb3VyY2VzIjogW3siYWxnb3JpdGhtIjogInNoYTI1NiIsICJkaWdlc3QiOiAiZGQ2OWQ2NGNiODM5ODg1ZWY4ODNlODUzOTNhZThmYjc4MDk0ZmNmODkxZTAzNjRlNjNiZDJkNzRmZGViNWQ3NyIsICJuYW1lIjogImNvbmZpZy5qc29uIn0sIHsiYWxnb3JpdGhtIjogInNoYTI1NiIsICJkaWdlc3QiOiAiNzg1YjA3NTFmYzJjNTNkYzE0YTRjZTNkODAwZTY5ZWY5Y2UxMDA5ZWIzMjdjY2Y0NThhZmUwOWMyNDJjMjZjOSIsICJuYW1lIjogIm1vZGVsLnNhZmV0ZW5zb3JzIn0sIHsiYWxnb3JpdGhtIjogInNoYTI1NiIsICJkaWdlc3QiOiAiNDM5MWMwMjE1MGI4OTNmOTQxZGY0YTgxNjk1MTYwMDI0MGRkZmE2YjZjYzZhNzUxZWNjMDRlMzNkMGY5N2M2NyIsICJuYW1lIjogInRva2VuaXplci92b2NhYi50eHQifV0sICJzZXJpYWxpemF0aW9uIjogeyJhbGxvd19zeW1saW5rcyI6IGZhbHNlLCAiaGFzaF90eXBlIjogInNoYTI1NiIsICJpZ25vcmVfcGF0aHMiOiBbIm1vZGVsLnNpZyIsICIuZ2l0Il0sICJtZXRob2QiOiAiZmlsZXMifX0sICJwcmVkaWNhdGVUeXBlIjogImh0dHBzOi8vbW9kZWxfc2lnbmluZy9zaWduYXR1cmUvdjEuMCIsICJzdWJqZWN0IjogW3siZGlnZXN0IjogeyJzaGEyNTYiOiAiYzEyZWVhZWJlYTQwNWFmZTYzZTkzZTU2YjI1YTBjMjAzMjczODQ0MjhhYTMzZDg3OTlhZWJkOTE4YWMwMDY1ZiJ9LCAibmFtZSI6ICJtb2RlbCJ9XX0=",
    "payloadType": "application/vnd.in-toto+json",
    "signatures": [
      {
        "keyid": "",
        "sig": "MEUCIENw+jNj3n2/zFbfvzXsY0NeQv3r835+KZnvNbWVPIgOAiEA/xTTWMRhiIjslmt+XCPbRhrKW23PP6u3N7E7HDoiqMs="
      }
    ]
  },
  "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
  "verificationMaterial": {
    "publicKey": {
      "hint": "6febc3819453b436726ba00fd3ad848f804f6b41db46231cf0383fbdb73026ea"
    },
    "tlogEntries": []
  }
}
