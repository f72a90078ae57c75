// The PostgreSQL JDBC driver against gamelake's Postgres port. Run as a single-file program:
//   java -cp /usr/share/java/postgresql.jar PgJdbc.java PORT USER PASSWORD
// Prints one "key<TAB>value" line per observation for the Rust e2e test to check.
import java.sql.*;
import java.util.*;

public class PgJdbc {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/gamelake";
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        try (Connection c = DriverManager.getConnection(url, props)) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet rs = md.getTables(null, "silver", "%", null)) {
                while (rs.next()) tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            System.out.println("tables\t" + String.join(",", tables));
            try (Statement st = c.createStatement();
                 ResultSet rs = st.executeQuery("SELECT * FROM silver.payment")) {
                ResultSetMetaData m = rs.getMetaData();
                rs.next();
                for (int i = 1; i <= m.getColumnCount(); i++) {
                    Object v = rs.getObject(i);
                    System.out.println("column\t" + m.getColumnName(i) + "\t" + m.getColumnTypeName(i) + "\t"
                        + (v == null ? "null" : v.getClass().getSimpleName() + ":" + v));
                }
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT count(*) FROM silver.item WHERE account_id = ? AND server = ?")) {
                ps.setLong(1, 12345L);
                ps.setString(2, "kr-03");
                for (int round = 0; round < 6; round++) { // past prepareThreshold: a named server-side statement
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        System.out.println("param\t" + round + "\t" + rs.getLong(1));
                    }
                }
            }
        }
        props.setProperty("password", args[2] + "-wrong");
        try (Connection c = DriverManager.getConnection(url, props)) {
            System.out.println("wrong_password\taccepted");
        } catch (SQLException e) {
            System.out.println("wrong_password\t" + e.getSQLState() + "\t" + e.getMessage().replace('\n', ' '));
        }
    }
}
