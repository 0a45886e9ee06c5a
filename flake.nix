{
  description = "oranc: OCI Registry As Nix Cache";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The `oranc` binary, built from this repository.
      package = { lib, rustPlatform }:
        rustPlatform.buildRustPackage {
          pname = "oranc";
          version = (builtins.fromTOML (builtins.readFile ./Cargo.toml)).workspace.package.version;
          src = self;
          cargoLock.lockFile = ./Cargo.lock;
          cargoBuildFlags = [ "-p" "oranc" ];
          # `oranc --version` names the commit (the source has no .git to ask).
          ORANC_COMMIT = self.shortRev or self.dirtyShortRev or "unknown";
          # The end-to-end tests start a registry and build store paths; the sandbox allows
          # neither, so only the unit tests run here.
          cargoTestFlags = [ "-p" "oranc-core" "-p" "oranc-config" "-p" "oranc" "--lib" ];
          meta = {
            description = "OCI Registry As Nix Cache";
            license = with lib.licenses; [ mit asl20 ];
            mainProgram = "oranc";
          };
        };

      # The NixOS module for `oranc server`: `settings` is rendered to the TOML config file (see
      # oranc.example.toml for every key), secrets come from files through systemd credentials,
      # and the unit runs as a dynamic user with a read-only system.
      module = { config, lib, pkgs, ... }:
        let
          cfg = config.services.oranc;
          toml = pkgs.formats.toml { };
          credentialPath = name: "/run/credentials/oranc.service/${name}";
          cachePasswords = lib.mapAttrs
            (name: _: { password_file = credentialPath "cache-${name}"; })
            cfg.cachePasswordFiles;
          loadCredentials =
            lib.mapAttrsToList (name: file: "${name}:${file}") cfg.credentialFiles
            ++ lib.mapAttrsToList (name: file: "cache-${name}:${file}") cfg.cachePasswordFiles;
          configFile = toml.generate "oranc.toml" cfg.settings;
        in
        {
          options.services.oranc = {
            enable = lib.mkEnableOption "oranc, a Nix binary cache served from OCI registries";

            package = lib.mkOption {
              type = lib.types.package;
              default = pkgs.oranc;
              defaultText = lib.literalExpression "pkgs.oranc";
              description = "The oranc package (the flake's overlay provides `pkgs.oranc`).";
            };

            port = lib.mkOption {
              type = lib.types.port;
              default = 8080;
              description = "TCP port the server listens on (all addresses unless `settings.listen` says otherwise).";
            };

            openFirewall = lib.mkOption {
              type = lib.types.bool;
              default = false;
              description = "Open `port` in the firewall.";
            };

            localCache = lib.mkOption {
              type = lib.types.bool;
              default = true;
              description = "Serve a cache kept in a local OCI layout under /var/lib/oranc at `/local`, with no registry.";
            };

            settings = lib.mkOption {
              type = toml.type;
              default = { };
              example = lib.literalExpression ''
                {
                  registries."ghcr.io" = { };
                  caches.main = { registry = "ghcr.io"; repository = "me/cache"; username = "me"; };
                  cache.ttl_secs = 600;
                  rate_limit.requests_per_second = 200;
                }
              '';
              description = "The server's configuration, rendered to TOML; every key is documented in oranc.example.toml (`oranc config example`).";
            };

            cachePasswordFiles = lib.mkOption {
              type = lib.types.attrsOf lib.types.str;
              default = { };
              example = { main = "/run/secrets/ghcr-token"; };
              description = "Per named cache, a file holding its registry password or token. Handed to the service as a systemd credential (read by root, never copied into the Nix store) and set as that cache's `password_file`.";
            };

            credentialFiles = lib.mkOption {
              type = lib.types.attrsOf lib.types.str;
              default = { };
              description = "Other secret files, handed over as systemd credentials: NAME is readable by the service at /run/credentials/oranc.service/NAME.";
            };

            environmentFile = lib.mkOption {
              type = lib.types.nullOr lib.types.str;
              default = null;
              description = "An environment file (e.g. `ORANC_USERNAME=...`, `ORANC_PASSWORD=...`, or a cache's `password_env`) read by systemd, outside the Nix store.";
            };

            logLevel = lib.mkOption {
              type = lib.types.str;
              default = "info";
              description = "`ORANC_LOG` filter (tracing syntax, e.g. `info,oranc_server=debug`).";
            };
          };

          config = lib.mkIf cfg.enable {
            services.oranc.settings = {
              listen = lib.mkDefault "[::]:${toString cfg.port}";
              caches = lib.mkMerge [
                (lib.mkIf cfg.localCache {
                  local = { registry = "/var/lib/oranc/registry"; repository = "oranc/cache"; };
                })
                cachePasswords
              ];
            };

            systemd.services.oranc = {
              description = "oranc: Nix binary cache served from OCI registries";
              wantedBy = [ "multi-user.target" ];
              wants = [ "network-online.target" ];
              after = [ "network-online.target" ];
              environment = {
                ORANC_LOG = cfg.logLevel;
                ORANC_HOME = "/var/lib/oranc/registry";
                # Where mirror caches' copies wait for the registry (`[mirror]
                # spool_max_bytes`): on disk, even on hosts whose /tmp is in memory.
                TMPDIR = "/var/cache/oranc";
              };
              serviceConfig = {
                ExecStartPre = "${lib.getExe cfg.package} config check ${configFile}";
                ExecStart = "${lib.getExe cfg.package} server --config ${configFile}";
                # `systemctl reload oranc` reads `settings.tls`'s certificate again (it is also
                # read again by itself when its files change). With security.acme, let the
                # service read the certificate: `systemd.services.oranc.serviceConfig
                # .SupplementaryGroups = [ "acme" ];` and point cert_file/key_file at
                # /var/lib/acme/HOST/fullchain.pem and key.pem.
                ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
                Restart = "on-failure";
                RestartSec = 2;
                # SIGTERM lets NAR downloads in flight finish (clients.shutdown_grace_secs,
                # 30 s by default); give them time.
                TimeoutStopSec = 60;
                # Every client connection is a file descriptor; the server raises its soft
                # limit to this and keeps clients.max_connections below it.
                LimitNOFILE = 65536;
                DynamicUser = true;
                StateDirectory = "oranc";
                CacheDirectory = "oranc";
                LoadCredential = loadCredentials;
                EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;

                AmbientCapabilities = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
                CapabilityBoundingSet = lib.optional (cfg.port < 1024) "CAP_NET_BIND_SERVICE";
                NoNewPrivileges = true;
                ProtectSystem = "strict";
                ProtectHome = true;
                PrivateTmp = true;
                PrivateDevices = true;
                ProtectClock = true;
                ProtectHostname = true;
                ProtectKernelTunables = true;
                ProtectKernelModules = true;
                ProtectKernelLogs = true;
                ProtectControlGroups = true;
                ProtectProc = "invisible";
                ProcSubset = "pid";
                RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
                RestrictNamespaces = true;
                RestrictRealtime = true;
                RestrictSUIDSGID = true;
                LockPersonality = true;
                MemoryDenyWriteExecute = true;
                SystemCallArchitectures = "native";
                SystemCallFilter = [ "@system-service" "~@privileged" ];
                UMask = "0077";
              };
            };

            networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ cfg.port ];
          };
        };
    in
    {
      overlays.default = final: _prev: { oranc = final.callPackage package { }; };

      packages = forAllSystems (pkgs: {
        oranc = pkgs.callPackage package { };
        default = self.packages.${pkgs.system}.oranc;
      });

      # `imports = [ oranc.nixosModules.default ];` then `services.oranc.enable = true;`
      # (options: README.md, "NixOS module").
      #
      # Monitoring it with the NixOS Prometheus module (alerts and dashboard: deploy/):
      #   services.prometheus = {
      #     enable = true;
      #     scrapeConfigs = [{
      #       job_name = "oranc";   # the alert rules and the dashboard expect this name
      #       static_configs = [{ targets = [ "127.0.0.1:${toString config.services.oranc.port}" ]; }];
      #     }];
      #     ruleFiles = [ "${oranc}/deploy/prometheus/alerts.yml" ];  # `oranc` = this flake's source
      #   };
      #   services.grafana.provision.dashboards.settings.providers = [{
      #     options.path = "${oranc}/deploy/grafana";
      #   }];
      nixosModules.default = {
        imports = [ module ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.system}.oranc ];
          packages = with pkgs; [ cargo rustc clippy rustfmt cargo-nextest skopeo distribution sqlite wrk ];
        };
      });
    };
}
