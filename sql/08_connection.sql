-- mask_conninfo hides every option libpq itself marks secret, not only
-- password: sslpassword (the key file's passphrase) too.
SELECT replicator.mask_conninfo('host=h dbname=d user=u password=s3cret sslpassword=k3ypass sslkey=/k');
SELECT replicator.mask_conninfo('postgresql://u:s3cret@h:5/db?sslpassword=k3ypass&options=-c%20work_mem%3D1MB');
-- an add_replica with an sslpassword shows it masked in replica_status
SELECT replicator.add_replica('masked', 'host=/nonexistent dbname=d sslpassword=k3ypass', enabled => false);
SELECT conninfo LIKE '%k3ypass%' AS shows_secret, conninfo LIKE '%sslpassword=''********''%' AS masked
  FROM replicator.replica_status WHERE name = 'masked';
SELECT replicator.drop_replica('masked');
